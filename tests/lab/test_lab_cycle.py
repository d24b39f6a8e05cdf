"""End to end in QEMU: load a capture kernel, crash the guest, check what the capture kernel saw.

Each (arch, scenario) boots once per session (see conftest.py); the tests
assert on what came back from the guest, read independently of the code
under test where possible (iomem from the first kernel's snapshot, the
vmcore's own ELF headers, Debian's vmcore-dmesg).
"""
from __future__ import annotations

import json

import pytest

from kexecfw.elfnotes import NT_PRSTATUS, PT_LOAD
from kexecfw.lab.result import LabResult
from kexecfw.memory.iomem import parse_iomem
from kexecfw.memory.ranges import Range, merge, subtract
from kexecfw.sysroot import Sysroot
from tests.labruns import EXEC_PHASES, require_phases

ARCHES = ["arm64", "x86_64"]

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("arch", ARCHES)]


def _panic(lab_run, arch: str) -> LabResult:
    result = lab_run(arch, "panic")
    # Everything else depends on the load: fail with the loader's own words if it did not work.
    require_phases(result, "load (")
    return result


def test_loader_loaded_the_crash_kernel(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    load = result.step("load", "first")
    assert load is not None and load.rc == 0, load.stderr_tail if load else "no load step"
    state = result.read_text("first/kexec-state") or ""
    assert "kexec_crash_loaded 1" in state


def test_capture_kernel_booted(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    require_phases(result, "crash -> capture kernel")
    cmdline = result.read_text("capture/cmdline") or ""
    assert "lab.role=capture" in cmdline and "maxcpus=1" in cmdline
    assert result.ok, result.failure


def test_vmcore_loads_cover_first_kernels_ram_outside_the_crash_region(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    header, _notes = result.vmcore_headers()
    memmap = parse_iomem((result.directory / "snapshot/proc/iomem").read_text())
    crash = memmap.crash_regions
    assert crash, "the first kernel has no Crash kernel region in its iomem"
    loads = [p for p in header.phdrs if p.type == PT_LOAD]
    assert loads
    ram = merge(memmap.system_ram)
    for p in loads:
        r = Range(p.paddr, p.paddr + p.memsz)
        assert any(x.contains(r) for x in ram), f"PT_LOAD {r} is not inside the first kernel's System RAM"
        assert not any(c.overlaps(r) for c in crash), f"PT_LOAD {r} overlaps the crash region"
    covered = merge(Range(p.paddr, p.paddr + p.memsz) for p in loads)
    expected = merge(memmap.crash_dump_ranges)
    if arch == "x86_64" and covered != expected:
        # The kernel's own x86 elfcorehdr (kexec_file_load) leaves out the low 1 MiB, which the
        # kernel always reserves; kexec-tools keeps it. Both are right; nothing else may differ.
        expected = subtract(expected, [Range(0, 1 << 20)])
    assert covered == expected
    # /proc/vmcore is the headers plus each PT_LOAD's bytes, laid out back to back.
    assert result.vmcore_size() == max(p.offset + p.filesz for p in loads)


def test_one_prstatus_per_online_cpu(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    _header, notes = result.vmcore_headers()
    online = Sysroot(result.directory / "snapshot").cpus("online")
    prstatus = [n for n in notes if n.name == b"CORE" and n.type == NT_PRSTATUS]
    assert len(prstatus) == len(online) == result.settings["smp"]


def test_vmcoreinfo_osrelease_is_the_kernel_release(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    _header, notes = result.vmcore_headers()
    info = [n for n in notes if n.name == b"VMCOREINFO"]
    assert len(info) == 1
    lines = info[0].desc.decode().splitlines()
    assert f"OSRELEASE={result.kernel_release}" in lines
    osrelease = (result.directory / "snapshot/proc/sys/kernel/osrelease").read_text().strip()
    assert osrelease == result.kernel_release


def test_crashed_kernels_dmesg_has_the_marker_and_the_sysrq_crash(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    marker = result.marker()
    assert marker and marker.startswith("LAB-DMESG-MARKER boot_id=")
    dmesg = result.crashed_dmesg()
    assert dmesg, "vmcore-dmesg printed nothing"
    assert marker in dmesg
    assert "sysrq: Trigger a crash" in dmesg


def test_kexecfw_vmcore_dmesg_has_the_marker(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    step = result.step("kexecfw-vmcore-dmesg", "capture")
    assert step is not None and step.rc == 0, f"kexecfw vmcore dmesg failed in the capture kernel: {step and step.stderr_tail}"
    text = (result.directory / "capture/kexecfw-dmesg.json").read_text()
    assert result.marker() in text
    assert "sysrq: Trigger a crash" in text


def test_plan_equals_dry_run_on_the_guests_snapshot(lab_run, arch: str) -> None:
    result = _panic(lab_run, arch)
    if result.loader != "kexecfw":
        pytest.skip("the plan comparison is for the kexecfw loader")
    plan = json.loads((result.directory / "plan/plan.json").read_text())
    dry = json.loads((result.directory / "dryrun.json").read_text())

    def shape(p: dict) -> tuple:
        # sha256 differs for buffers with fresh random seeds (DTB) and those that embed digests.
        return (p["entry"], p["flags"], p["cmdline"],
                [(s["name"], s["mem"], s["memsz"], s["bufsz"]) for s in p["segments"]])

    assert shape(plan) == shape(dry)


def test_exec_boots_the_second_kernel_with_the_marker(lab_run, arch: str) -> None:
    result = lab_run(arch, "exec")
    require_phases(result, *EXEC_PHASES)
    cmdline = result.read_text("second/cmdline") or ""
    assert "lab.role=second" in cmdline
