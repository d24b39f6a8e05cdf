"""In a real x86_64 guest (the QEMU lab, TCG or KVM): kexecfw's classic kexec_load with our purgatory.

A panic load with --classic next to Debian's kexec-tools 2.0.25 (`kexec -p -d`) in the same guest:
the same kernel and initrd segments, everything in the crash region, the same elfcorehdr program
headers (less kexec-tools' low-640K backup copy, which Linux 5.8+ does not need); then the crash,
and a capture kernel that booted through our purgatory with a /proc/vmcore built from our
elfcorehdr. And a normal load + exec that boots a second kernel carrying a marker.

Generations: Debian 12's 6.1 and Debian 13's 6.12, or the one $KEXECFW_LAB_GENERATION names.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kexecfw.elfnotes import NT_PRSTATUS, PT_LOAD, PT_NOTE, parse_elf_header
from kexecfw.memory.iomem import parse_iomem
from kexecfw.memory.ranges import Range, subtract
from kexecfw.sysroot import Sysroot
from tests.labruns import EXEC_PHASES, lab_generations, require_phases

pytestmark = pytest.mark.slow


# Debian 12's 6.1 and Debian 13's 6.12 (5-level paging under -cpu max); $KEXECFW_LAB_GENERATION picks one
@pytest.fixture(scope="module", params=lab_generations())
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from kexecfw.lab.runner import run
    runs = {}

    def get(scenario: str):
        if scenario not in runs:
            keep = tmp_path_factory.mktemp(f"lab-x86_64-{request.param}-classic-{scenario}") / "results"
            result = run("x86_64", scenario, "kexecfw", compare_kexec_tools=(scenario == "panic"),
                         keep=keep, kernel_generation=request.param, timeout=900, load_args="--classic")
            print(result.summary())
            if not result.ok and next_kernel_hit_an_int3_oops(result.directory / "console.log"):
                # Seen in CI under TCG (6.12, 2026-12-05): the second kernel booted, then died 4 s in of
                # "Oops: int3" in sched_clock_cpu, the int3 that live code patching places while another vCPU
                # runs through it. The load and the jump worked; the run is repeated once, and said so.
                import warnings
                warnings.warn(f"x86_64 {request.param} {scenario}: the next kernel died of an int3 oops under "
                              f"TCG ({result.directory}): running the scenario once more")
                keep = tmp_path_factory.mktemp(f"lab-x86_64-{request.param}-classic-{scenario}-rerun") / "results"
                result = run("x86_64", scenario, "kexecfw", compare_kexec_tools=(scenario == "panic"),
                             keep=keep, kernel_generation=request.param, timeout=900, load_args="--classic")
                print(result.summary())
            runs[scenario] = result
        return runs[scenario]
    return get


def next_kernel_hit_an_int3_oops(console: Path) -> bool:
    """The kernel kexecfw booted (the console's second "Linux version") printed "Oops: int3"."""
    text = console.read_bytes() if console.is_file() else b""
    first = text.find(b"Linux version")
    second = text.find(b"Linux version", first + 1) if first >= 0 else -1
    return second >= 0 and b"Oops: int3" in text[second:]


def test_an_int3_oops_of_the_next_kernel_is_told_apart(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    boot = b"[    0.000000] Linux version 6.12.118+deb13-cloud-amd64\n"
    console.write_bytes(boot + b"kexecfw exec\n" + boot + b"[    4.496609] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n")
    assert next_kernel_hit_an_int3_oops(console)
    console.write_bytes(boot + b"[    4.496609] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n")   # the first kernel's
    assert not next_kernel_hit_an_int3_oops(console)
    console.write_bytes(boot + boot + b"LAB-EXEC marker\n")
    assert not next_kernel_hit_an_int3_oops(console)


def _kexec_tools(result) -> tuple[list[dict], list[tuple]]:
    text = result.read_text("first/steps/kexec-tools-debug.err") or ""
    if "segment[0]" not in text:
        pytest.fail(f"no kexec-tools debug output in {result.directory}/first/steps")
    segs = [dict(bufsz=int(a, 16), mem=int(b, 16), memsz=int(c, 16)) for a, b, c in re.findall(
        r"segment\[\d+\]\.bufsz = (0x[0-9a-f]+)\nsegment\[\d+\]\.mem   = (0x[0-9a-f]+)\n"
        r"segment\[\d+\]\.memsz = (0x[0-9a-f]+)", text)]
    phdrs = [tuple(int(x, 0) for x in m) for m in re.findall(
        r"p_type = (\d+), p_offset = (0x[0-9a-f]+) p_paddr = (0x[0-9a-f]+) p_vaddr = (0x[0-9a-f]+) "
        r"p_filesz = (0x[0-9a-f]+)", text)]
    return segs, phdrs


def test_classic_panic_load_matches_kexec_tools(lab) -> None:
    result = lab("panic")
    load = result.step("load", "first")
    assert load is not None and load.rc == 0, load.stderr_tail if load else "no load step"
    plan = json.loads(result.path("plan/plan.json").read_text())
    assert plan["syscall"] == "kexec_load" and plan["flags"] == "0x3e0001"
    ours = {s["name"]: {k: int(s[k], 16) for k in ("mem", "memsz", "bufsz")} for s in plan["segments"]}
    theirs, _ = _kexec_tools(result)
    crash = parse_iomem(result.path("snapshot/proc/iomem").read_text()).main_crash_region
    for name, seg in ours.items():
        assert crash.contains(Range(seg["mem"], seg["mem"] + seg["memsz"])), name
    for their in theirs:
        assert crash.contains(Range(their["mem"], their["mem"] + their["memsz"]))
    for name in ("kernel", "initrd"):
        assert any((t["bufsz"], t["memsz"]) == (ours[name]["bufsz"], ours[name]["memsz"]) for t in theirs), name
    assert int(plan["entry"], 16) in range(ours["purgatory"]["mem"], ours["purgatory"]["mem"] + ours["purgatory"]["memsz"])
    assert "kexec_crash_loaded 1" in (result.read_text("first/kexec-state") or "")


def test_classic_elfcorehdr_matches_kexec_tools(lab) -> None:
    result = lab("panic")
    header = parse_elf_header(result.path("plan/02-elfcorehdr.bin").read_bytes(), "elfcorehdr")
    ours = [(p.type, p.offset, p.paddr, p.vaddr, p.filesz) for p in header.phdrs]
    _, theirs = _kexec_tools(result)
    assert ours == [t for t in theirs if not (t[0] == PT_LOAD and t[2] < 0x100000)]


def test_capture_kernel_booted_through_our_purgatory(lab) -> None:
    result = lab("panic")
    plan = json.loads(result.path("plan/plan.json").read_text())
    cmdline = result.read_text("capture/cmdline") or ""
    elfcorehdr = next(int(s["mem"], 16) for s in plan["segments"] if s["name"] == "elfcorehdr")
    assert f"elfcorehdr={elfcorehdr >> 10}K" in cmdline.split()
    assert "lab.role=capture" in cmdline
    # /proc/vmcore comes from our elfcorehdr: one NT_PRSTATUS per online CPU, VMCOREINFO, RAM outside
    # the crash region and the low 1 MiB, the kernel text at its KASLR address
    header, notes = result.vmcore_headers()
    online = Sysroot(result.directory / "snapshot").cpus("online")
    assert len([n for n in notes if n.name == b"CORE" and n.type == NT_PRSTATUS]) == len(online)
    assert len([n for n in notes if n.name == b"VMCOREINFO"]) == 1
    memmap = parse_iomem(result.path("snapshot/proc/iomem").read_text())
    want = subtract(memmap.system_ram, memmap.crash_regions + [Range(0, 1 << 20)])
    loads = [p for p in header.phdrs if p.type == PT_LOAD and p.vaddr < 0xFFFFFFFF80000000]
    assert [Range(p.paddr, p.paddr + p.memsz) for p in loads] == want
    text = [p for p in header.phdrs if p.type == PT_LOAD and p.vaddr >= 0xFFFFFFFF80000000]
    assert len(text) == 1 and memmap.kernel_code.start == text[0].paddr
    assert header.phdrs[0].type == PT_NOTE
    assert (result.vmcore_size() or 0) > 0


def test_classic_exec_boots_the_second_kernel(lab) -> None:
    result = lab("exec")
    require_phases(result, *EXEC_PHASES)
    plan = json.loads(result.path("plan/plan.json").read_text())
    assert plan["syscall"] == "kexec_load" and plan["mode"] == "normal"
    assert "lab.role=second" in (result.read_text("second/cmdline") or "")
