"""In a real guest of each kernel generation (the QEMU lab): kexecfw's panic load against Debian's
kexec-tools 2.0.25 loading the same kernel and initrd there (`kexec -p -d`): same segments at the same
addresses, same sizes, all in the crash region, same elfcorehdr program headers; and the capture kernel
that kexecfw loaded came up with a /proc/vmcore."""
from __future__ import annotations

import json
import re

import pytest

from kexecfw.elfnotes import parse_elf_header
from kexecfw.memory.iomem import parse_iomem
from tests.arm64.test_plan import kexec_tools_phdrs, kexec_tools_segments
from tests.labruns import lab_generations, shared_lab_run

pytestmark = pytest.mark.slow
ORDER = ["kernel", "initrd", "dtb", "purgatory", "elfcorehdr"]    # kexec-tools' segment order on arm64


@pytest.fixture(scope="module", params=lab_generations())
def lab_result(request: pytest.FixtureRequest):
    # the 6.1 run is the same boot tests/lab and tests/vmcore assert on
    return shared_lab_run("arm64", generation=request.param)


def _kexec_tools_debug(result) -> str:
    text = result.read_text("first/steps/kexec-tools-debug.err")
    if not text or "segment[0]" not in text:
        pytest.fail(f"no kexec-tools debug output in {result.directory}/first/steps")
    return text


def test_the_capture_kernel_kexecfw_loaded_has_a_vmcore(lab_result) -> None:
    assert lab_result.ok, lab_result.failure
    assert (lab_result.vmcore_size() or 0) > 0


def test_same_segments_as_kexec_tools(lab_result) -> None:
    plan = json.loads(lab_result.path("plan/plan.json").read_text())
    ours = sorted(plan["segments"], key=lambda s: int(s["mem"], 16))
    theirs = kexec_tools_segments(_kexec_tools_debug(lab_result))
    assert [s["name"] for s in ours] == ORDER
    assert len(theirs) == len(ours)
    crash = parse_iomem(lab_result.path("snapshot/proc/iomem").read_text()).main_crash_region
    for seg, their in zip(ours, theirs):
        mem, memsz, bufsz = (int(seg[k], 16) for k in ("mem", "memsz", "bufsz"))
        assert mem == their["mem"], seg["name"]
        assert crash.start <= mem and mem + memsz <= crash.end, seg["name"]
        if seg["name"] in ("kernel", "initrd"):
            assert (memsz, bufsz) == (their["memsz"], their["bufsz"]), seg["name"]
        elif seg["name"] == "purgatory":
            assert memsz <= their["memsz"]
        else:   # the DTB and the elfcorehdr: the same page count
            assert memsz == their["memsz"], seg["name"]


def test_same_elfcorehdr_as_kexec_tools(lab_result) -> None:
    header = parse_elf_header(lab_result.path("plan/02-elfcorehdr.bin").read_bytes(), "elfcorehdr")
    ours = [(p.type, p.offset, p.paddr, p.vaddr, p.filesz) for p in header.phdrs]
    debug = _kexec_tools_debug(lab_result)
    assert ours == kexec_tools_phdrs(debug)
    # kexec-tools only had _text right on 6.1 because the lab added it to kallsyms; we did without.
    kernel_text = next(p for p in ours if p[0] == 1)
    assert kernel_text[3] != 0xFFFF_FFFF_FFFF_FFFF
    assert re.search(rf"Kernel text Elf header: .* p_vaddr = {kernel_text[3]:#x} ", debug)
