"""The recorded riscv64 lab runs (tests/data/riscv64-lab, README.md there): kexec-tools 2.0.32 and
kexecfw loading the crash kernel of the same Debian 13 guest. What they show is checked here without
a guest: makedumpfile 1.7.6 cannot read kexec-tools' dump and reads ours, the reason in the two
elfcorehdrs, crash 8.0.6 on the dump kexecfw saved; and the lab's known-defect check judges a step
truthfully (it passes only when the defect shows)."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest

from kexecfw.lab.result import LabResult, Step
from kexecfw.lab.runner import KNOWN_DEFECTS, _add_known_defect
from kexecfw.memory.iomem import parse_iomem
from tests.conftest import REPO

RECORDED = REPO / "tests" / "data" / "riscv64-lab"


@pytest.fixture(scope="module")
def theirs() -> LabResult:
    return LabResult.load(RECORDED / "kexec-tools")


@pytest.fixture(scope="module")
def ours() -> LabResult:
    return LabResult.load(RECORDED / "kexecfw")


def _mem_section(run: LabResult) -> int:
    """The physical page makedumpfile looked for first: the mem_section array."""
    found = re.search(r"non-existent page at (0x[0-9a-f]+)", run.read_text("capture/steps/makedumpfile.err") or "")
    assert found, "makedumpfile's message names no page"
    return int(found.group(1), 16)


def linear_map(run: LabResult) -> tuple[int, int]:
    """PAGE_OFFSET and phys_ram_base (decimal) from the VMCOREINFO note of the run's /proc/vmcore."""
    _, notes = run.vmcore_headers()
    text = next(n.desc for n in notes if n.name == b"VMCOREINFO").decode()
    return (int(re.search(r"NUMBER\(PAGE_OFFSET\)=(0x[0-9a-f]+|\d+)", text).group(1), 0),
            int(re.search(r"NUMBER\(phys_ram_base\)=(\d+)", text).group(1)))


def _loads(run: LabResult) -> list[tuple[int, int, int]]:
    header, _ = run.vmcore_headers()
    return [(p.paddr, p.memsz, p.vaddr) for p in header.phdrs if p.type == 1]


def test_makedumpfile_fails_on_kexec_tools_dump_as_the_run_says(theirs: LabResult) -> None:
    assert (theirs.arch, theirs.loader, theirs.kernel_release) == ("riscv64", "kexec-tools", "6.12.118+deb13-riscv64")
    assert theirs.ok, theirs.failure
    phase = theirs.phase("makedumpfile -c: fails as known")
    assert phase is not None and phase.ok and phase.required
    assert phase.detail.startswith("validate_mem_section: Can't read mem_section array.")
    step = theirs.step("makedumpfile", "capture")
    assert step is not None and step.rc == 1
    assert "get_mm_sparsemem: Can't get the address of mem_section." in theirs.read_text("capture/steps/makedumpfile.err")
    assert "kexec-tools 2.0.32" in (theirs.read_text("first/steps/kexec-version.out") or "")


def test_makedumpfile_and_crash_read_our_dump(ours: LabResult) -> None:
    assert (ours.arch, ours.loader, ours.kernel_release) == ("riscv64", "kexecfw", "6.12.118+deb13-riscv64")
    assert ours.ok, ours.failure
    for name in ("makedumpfile -c", "makedumpfile reads kexecfw's saved dump"):
        phase = ours.phase(name)
        assert phase is not None and phase.ok and phase.required, name
    assert "sysrq: Trigger a crash" in ours.read_text("capture/kexecfw-dump-dmesg.txt")
    crash = ours.read_text("host/crash.txt")
    assert crash.startswith("# crash 8.0.6 ") and ", exit 0\n" in crash.splitlines()[0] + "\n"
    assert 'PANIC: "Kernel panic - not syncing: sysrq triggered crash"' in crash
    assert "RELEASE: 6.12.118+deb13-riscv64" in crash and "DUMPFILE:" in crash
    frames = re.findall(r"#\d+ \[[0-9a-f]+\] (\w+) at ffffffff", crash)
    assert "write_sysrq_trigger" in frames and "vpanic" in frames
    assert "Starting crashdump kernel..." in crash     # the end of crash's `log`


def test_kexec_tools_leaves_mem_section_out_of_its_dump_and_kexecfw_does_not(theirs: LabResult,
                                                                               ours: LabResult) -> None:
    mem_section = _mem_section(theirs)
    iomem = parse_iomem(theirs.read_text("snapshot/proc/iomem"))
    assert any(r.name == "Reserved" and r.start <= mem_section <= r.range.last for r in iomem.regions)
    assert not any(s <= mem_section < s + n for s, n, _ in _loads(theirs))
    assert any(s <= mem_section < s + n for s, n, _ in _loads(ours))


def test_kexec_tools_linear_map_addresses_are_wrong_and_ours_are_right(theirs: LabResult, ours: LabResult) -> None:
    for run, right in ((theirs, False), (ours, True)):
        page_offset, phys_ram_base = linear_map(run)
        assert (page_offset, phys_ram_base) == (0xFF60000000000000, 0x80000000)   # Sv57, QEMU virt
        linear = _loads(run)[1:]          # the first is the kernel image, at its kernel-mapping address
        assert linear and _loads(run)[0][2] >= 0xFFFF_FFFF_0000_0000
        assert all(v == s - phys_ram_base + page_offset for s, _, v in linear) is right, run.loader


@pytest.mark.parametrize(("rc", "stderr", "ok"), [
    (1, None, True),                                            # as recorded
    (0, "", False),                                             # makedumpfile read it: the defect is gone
    (139, "Segmentation fault\n", False),                       # failed, but not as known
])
def test_the_known_defect_check_passes_only_when_the_defect_shows(theirs: LabResult, tmp_path, rc, stderr,
                                                                  ok) -> None:
    defect = KNOWN_DEFECTS[("riscv64", "kexec-tools")]
    if stderr is None:
        stderr = theirs.read_text("capture/steps/makedumpfile.err")
    (tmp_path / "capture/steps").mkdir(parents=True)
    (tmp_path / "capture/steps/makedumpfile.err").write_text(stderr)
    judged = replace(theirs, directory=tmp_path, phases=[])
    _add_known_defect(judged, "makedumpfile -c", Step("capture", "makedumpfile", rc, 1.0, 2.0), defect)
    (phase,) = judged.phases
    assert phase.ok is ok and phase.required
    assert (defect.message in phase.detail) if ok else ("did not show" in phase.detail or "without" in phase.detail)
