"""_text, PAGE_OFFSET and PHYS_OFFSET of a real Debian 6.1 arm64 guest, derived without kallsyms' _text,
compared with what kexec-tools wrote there once the lab added a _text line to kallsyms by hand."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kexecfw.errors import BadInputError
from kexecfw.memory.iomem import read_iomem
from kexecfw.plugins.arm64.vmcore_facts import kernel_address_space
from kexecfw.running import kallsyms_symbol, read_vmcoreinfo
from kexecfw.sysroot import Sysroot


def kexec_tools_kernel_text(debug: str) -> dict[str, int]:
    m = re.search(r"Kernel text Elf header: p_type = 1, p_offset = (0x[0-9a-f]+) p_paddr = (0x[0-9a-f]+) "
                  r"p_vaddr = (0x[0-9a-f]+) p_filesz = (0x[0-9a-f]+)", debug)
    assert m, "kexec-tools debug output without a kernel text header"
    return {"paddr": int(m[2], 16), "vaddr": int(m[3], 16), "size": int(m[4], 16)}


def test_snapshot_kallsyms_lacks_text(arm64_sysroot: Path) -> None:
    # The point of the derivation: this kernel does not list _text.
    assert kallsyms_symbol(Sysroot(arm64_sysroot), "_text") is None
    assert kallsyms_symbol(Sysroot(arm64_sysroot), "_stext") == 0xFFFFB9F59A610000


def test_kallsyms_symbol_in_a_full_size_file(tmp_path: Path) -> None:
    # A live /proc/kallsyms: ~150k lines, read in chunks; lines straddle the chunk boundaries.
    from kexecfw import running
    lines = [f"{0xffff800008000000 + 16 * i:016x} t sym_{i}" for i in range(150_000)]
    lines[3] = "ffff800008010000 T _stext"
    lines[-2] = "ffff800009000000 t _text_in_module\t[mod]"
    lines[-1] = "ffff800009000010 t last_one\t[mod]"
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "kallsyms").write_text("\n".join(lines))        # no final newline
    sysroot = Sysroot(tmp_path)
    assert kallsyms_symbol(sysroot, "_stext") == 0xFFFF800008010000
    assert kallsyms_symbol(sysroot, "_text") is None                    # only a longer name has it as prefix
    assert kallsyms_symbol(sysroot, "last_one") == 0xFFFF800009000010
    for i in (0, 4094, 77_777, 149_997):
        assert kallsyms_symbol(sysroot, f"sym_{i}") == 0xFFFF800008000000 + 16 * i
    assert len("\n".join(lines)) > 50 * running.KALLSYMS_CHUNK


def test_kernel_text_matches_kexec_tools_with_its_workaround(arm64_sysroot: Path, arm64_fixture: Path) -> None:
    sysroot = Sysroot(arm64_sysroot)
    space = kernel_address_space(sysroot, read_iomem(sysroot))
    expected = kexec_tools_kernel_text((arm64_fixture / "kexec-tools" / "kexec-p-debug.txt").read_text())
    workaround = (arm64_fixture / "kexec-tools" / "kallsyms-workaround.txt").read_text()
    assert f"{space.text_vaddr:x} T _text" in workaround
    assert (space.text_vaddr, space.text_paddr, space.text_size) == \
        (expected["vaddr"], expected["paddr"], expected["size"])
    assert "KERNELOFFSET" in space.text_source


def test_linear_map_matches_kexec_tools(arm64_sysroot: Path, arm64_fixture: Path) -> None:
    sysroot = Sysroot(arm64_sysroot)
    space = kernel_address_space(sysroot, read_iomem(sysroot))
    debug = (arm64_fixture / "kexec-tools" / "kexec-p-debug.txt").read_text()
    assert f"page_offset : {space.page_offset:016x}" in debug
    assert f"va_bits : {space.va_bits}" in debug
    assert f"phys_offset : {space.phys_offset:016x}" in debug
    # kexec-tools' first RAM PT_LOAD: paddr 0x40000000 at vaddr 0xffff000000000000
    assert space.linear_vaddr(0x40000000) == 0xFFFF000000000000
    assert space.linear_vaddr(0xB9A00000) == 0xFFFF000079A00000


def _copy(sysroot: Path, dest: Path) -> Path:
    shutil.copytree(sysroot, dest, symlinks=True)
    return dest


def test_kallsyms_text_is_cross_checked(arm64_sysroot: Path, tmp_path: Path) -> None:
    root = _copy(arm64_sysroot, tmp_path / "root")
    kallsyms = root / "proc" / "kallsyms"
    kallsyms.chmod(0o644)
    original = kallsyms.read_text()
    kallsyms.write_text("ffffb9f59a600000 T _text\n" + original)
    sysroot = Sysroot(root)
    space = kernel_address_space(sysroot, read_iomem(sysroot))
    assert space.text_source.endswith("matches kallsyms")
    kallsyms.write_text("ffffb9f59a400000 T _text\n" + original)
    with pytest.raises(BadInputError, match="mixes boots"):
        kernel_address_space(sysroot, read_iomem(sysroot))


def test_iomem_from_another_boot_is_refused(arm64_sysroot: Path, tmp_path: Path) -> None:
    root = _copy(arm64_sysroot, tmp_path / "root")
    iomem = root / "proc" / "iomem"
    iomem.chmod(0o644)
    iomem.write_text(iomem.read_text().replace("40210000-4185ffff : Kernel code", "40410000-4185ffff : Kernel code"))
    sysroot = Sysroot(root)
    with pytest.raises(BadInputError, match="different boots"):
        kernel_address_space(sysroot, read_iomem(sysroot))


def test_vmcoreinfo_of_the_snapshot(arm64_sysroot: Path) -> None:
    info = read_vmcoreinfo(Sysroot(arm64_sysroot))
    assert info.osrelease == "6.1.0-56-arm64"
    assert info.number("VA_BITS") == 48
    assert info.kernel_offset == 0x39F592600000


def test_missing_kcore_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="kcore does not exist"):
        read_vmcoreinfo(Sysroot(tmp_path))
