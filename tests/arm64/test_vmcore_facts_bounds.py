"""The running arm64 kernel's VMCOREINFO (proc/kcore of a real Debian 6.1 guest's snapshot) with one value
out of bounds: a BadInputError naming the key and proc/kcore, not a negative shift or a MemoryError."""
from __future__ import annotations

from pathlib import Path

import pytest

from kexecfw.errors import BadInputError
from kexecfw.memory.iomem import read_iomem
from kexecfw.plugins.arm64.vmcore_facts import kernel_address_space
from kexecfw.running import read_vmcoreinfo
from kexecfw.sysroot import Sysroot
from kexecfw.vmcoreinfo import VmcoreInfo


@pytest.mark.parametrize("key,value,words", [
    ("NUMBER(VA_BITS)", "-1", "NUMBER(VA_BITS)=-1 is not plausible (expected 36..52)"),
    ("NUMBER(VA_BITS)", str(1 << 64), f"NUMBER(VA_BITS)={1 << 64} is not plausible"),
    ("NUMBER(kimage_voffset)", "0x1" + "0" * 20, "NUMBER(kimage_voffset)=" + str(1 << 80)),
    ("KERNELOFFSET", "-1", "KERNELOFFSET=-1 is not plausible"),
])
def test_kcore_vmcoreinfo_value_out_of_bounds(arm64_sysroot: Path, key: str, value: str, words: str) -> None:
    sysroot = Sysroot(arm64_sysroot)
    raw = dict(read_vmcoreinfo(sysroot).raw)
    raw[key] = value
    with pytest.raises(BadInputError) as e:
        kernel_address_space(sysroot, read_iomem(sysroot), VmcoreInfo(raw))
    assert words in e.value.message and "proc/kcore" in e.value.message, e.value.message
