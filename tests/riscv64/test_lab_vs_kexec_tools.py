"""In the riscv64 lab guest (Debian 13, the boot tests/riscv64/test_lab.py shares): sid's kexec-tools
2.0.32 loads the same crash kernel first (`kexec -p -d`, then unloaded), and its elfcorehdr is
compared with kexecfw's. kexec-tools leaves the Reserved RAM inside System RAM out of the dump — where
mem_section lies — and gives the linear map wrong virtual addresses; kexecfw covers that RAM and
uses PAGE_OFFSET at phys_ram_base. That it makes makedumpfile fail needs a crash of kexec-tools' own
load, another boot (about 3 minutes of TCG): recorded in tests/data/riscv64-lab, checked by
test_lab_recorded.py."""
from __future__ import annotations

import pytest

from kexecfw.elfnotes import parse_elf_header
from kexecfw.lab.runner import MUST_READ
from kexecfw.memory.iomem import parse_iomem
from tests.arm64.test_plan import kexec_tools_phdrs
from tests.labruns import require_phases, shared_lab_run
from tests.riscv64.test_lab_recorded import linear_map

pytestmark = pytest.mark.slow
PT_LOAD = 1


@pytest.fixture(scope="module")
def lab_result():
    return shared_lab_run("riscv64", generation="6.12")


@pytest.fixture(scope="module")
def loads(lab_result) -> dict[str, list[tuple[int, int, int]]]:
    """(paddr, size, vaddr) of the RAM PT_LOADs (not the kernel image's) of each loader's elfcorehdr."""
    debug = lab_result.read_text("first/steps/kexec-tools-debug.err") or ""
    theirs = [(p[2], p[4], p[3]) for p in kexec_tools_phdrs(debug) if p[0] == PT_LOAD]
    assert theirs, f"no kexec-tools debug output in {lab_result.directory}/first/steps"
    header = parse_elf_header(lab_result.path("plan/02-elfcorehdr.bin").read_bytes(), "elfcorehdr")
    ours = [(p.paddr, p.filesz, p.vaddr) for p in header.phdrs if p.type == PT_LOAD]
    # the first PT_LOAD of both is the kernel image, at its kernel-mapping address
    assert theirs[0][2] == ours[0][2] and theirs[0][2] >= 0xFFFF_FFFF_0000_0000
    return {"kexec-tools": theirs[1:], "kexecfw": ours[1:]}


def _covered(loads: list[tuple[int, int, int]], start: int, last: int) -> bool:
    return any(s <= start and last < s + n for s, n, _ in loads)


def test_sid_kexec_tools_2_0_32_loaded_in_the_guest(lab_result) -> None:
    require_phases(lab_result, "kexec-tools load for comparison", *(
        ("makedumpfile -c", "makedumpfile reads kexecfw's saved dump") if MUST_READ.get("riscv64") else ()))
    assert "2.0.32" in (lab_result.read_text("first/steps/kexec-version.out") or "")


def test_kexec_tools_leaves_the_reserved_ram_out_and_kexecfw_covers_it(lab_result, loads) -> None:
    iomem = parse_iomem(lab_result.path("snapshot/proc/iomem").read_text())
    crash = iomem.main_crash_region
    firmware_end = loads["kexecfw"][0][0]      # OpenSBI's PMP-protected memory stays out of both
    reserved = [r for r in iomem.regions if r.name == "Reserved" and r.depth == 1
                and r.start >= firmware_end and not crash.start <= r.start <= crash.last]
    assert len(reserved) >= 3
    for r in reserved:
        assert _covered(loads["kexecfw"], r.start, r.range.last), r
    missing = [r for r in reserved if not _covered(loads["kexec-tools"], r.start, r.range.last)]
    assert len(missing) == len(reserved), "kexec-tools 2.0.32 dumped Reserved RAM: has it been fixed?"


def test_kexec_tools_linear_map_addresses_are_wrong_and_ours_are_right(lab_result, loads) -> None:
    page_offset, phys_ram_base = linear_map(lab_result)
    for loader, right in (("kexec-tools", False), ("kexecfw", True)):
        assert all(v == s - phys_ram_base + page_offset for s, _, v in loads[loader]) is right, loader
