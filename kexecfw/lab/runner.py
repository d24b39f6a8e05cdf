"""One lab run: prepare the host, build the guest, boot it in QEMU, bring the results back.

``run(arch="arm64", scenario="panic", loader="kexecfw")`` is the API the CLI,
the tests and the notebooks share; it returns a :class:`LabResult` (also
written as result.json) and raises :class:`LabError` only when the lab itself
cannot work (no QEMU, no packages). A guest that fails or hangs is a result
with ``ok=False`` and the phase that failed, with the console's tail.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kexecfw.lab.cache import cache_dir
from kexecfw.lab.datadisk import SLOTS, create_disk, read_slot
from kexecfw.lab.errors import LabError
from kexecfw.lab.hostprep import ensure_host_tools
from kexecfw.lab.initramfs import build_initrds
from kexecfw.lab.qemu import Disk, QemuOutcome, kvm_usable, qemu_command, run_qemu
from kexecfw.lab.result import LabResult, Phase, Step
from kexecfw.lab.targets import arch_target, target_generation
from kexecfw.lab.userland import prepare_userland
from kexecfw.progress import Progress

SCENARIOS = ("panic", "exec")
STALE_BUILD_SECONDS = 6 * 3600
# First-kernel arguments for a normal (exec) load, by (arch, generation), with the reason.
EXEC_WORKAROUNDS = {
    ("arm64", "6.12"): ("arm64.nolva", "Debian's 6.12 arm64 kernel oopses in trans_pgd_create_copy on a normal "
                        "kexec_load with 52-bit VAs (kexec-tools too): the first kernel runs with 48-bit VAs"),
}
LOADERS = ("kexecfw", "kexec-tools")


@dataclass(frozen=True)
class KnownDefect:
    step: str       # the capture kernel's step that must fail
    message: str    # what its stderr must say
    why: str


# Another loader's defects, by (arch, loader), that a run of it checks are still there: the run
# passes when the step fails with the message, and fails when it does not, so what the README
# says of that loader cannot go stale unnoticed.
KNOWN_DEFECTS = {
    ("riscv64", "kexec-tools"): KnownDefect(
        "makedumpfile", "Can't read mem_section array",
        "kexec-tools 2.0.32's elfcorehdr leaves out the memblock Reserved RAM, where mem_section lies"),
}
# The readers a dump of kexecfw's load must satisfy, by architecture (required phases, not
# optional): on riscv64 they are the point of the port, where kexec-tools' dump fails them.
MUST_READ = {"riscv64": ("makedumpfile", "makedumpfile-reads-kexecfw")}
DUMP_DISK_MIB = 4096   # the measured dumps' disk (sparse): three -d 31 dumps of a big guest
# the guest's console marks (guest/init `mark`) -> the phase that starts there, for the live progress
MARK_PHASES = {
    "first-init": "first kernel up: snapshot", "load-start": "loading the next kernel",
    "load-end": "loaded: dry-run, first kernel's results", "fill-start": "filling memory before the crash",
    "exec": "exec: booting the second kernel", "second-init": "second kernel up",
    "crash": "crash: booting the capture kernel", "capture-init": "capture kernel up: reading /proc/vmcore",
    "kexecfw-start": "saving the dump (kexecfw vmcore save)", "kexecfw-start-measured": "saving the dumps (measured)",
    "makedumpfile-start": "saving the dump (makedumpfile, for comparison)", "capture-done": "done: powering off",
}
Log = Callable[[str], None]


def _stderr_log(msg: str) -> None:
    import sys
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def default_results_dir(arch: str) -> Path:
    return Path("lab-results") / f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(arch: str = "arm64", scenario: str = "panic", loader: str = "kexecfw", *,
        compare_kexec_tools: bool = False, mem: int = 1024, smp: int = 2, crashkernel: str = "256M",
        keep: str | os.PathLike[str] | None = None, kernel_generation: str | None = None,
        accel: str = "auto", timeout: float = 900, silence: float = 300,
        cache: str | os.PathLike[str] | None = None, log: Log = _stderr_log,
        load_args: str = "", save_vmcore: bool = False, bench_load: int = 0,
        fill_memory: bool = False, measure_dumps: bool = False, dump_rounds: int = 0) -> LabResult:
    """Boot the guest, run ``scenario``, bring the results back (see docs/lab.md).

    ``fill_memory``: before the crash the first kernel fills most of its RAM (anonymous memory and
    page cache, guest.py fill-memory), so that the dump's filters have real work; it implies
    ``measure_dumps``: the capture kernel runs kexecfw (zlib, zstd) and makedumpfile one after the
    other with wall time, peak RSS and output size each (capture/steps/NAME.measure), writing to a disk.
    ``dump_rounds``: instead, N rounds of the kexecfw command's save (--json), makedumpfile -c and
    makedumpfile -l, alternating, measured the same way (steps round-I-TOOL); implies ``measure_dumps``.
    """
    if scenario == "service":   # a full-OS guest, not the lab initramfs (kexecfw.lab.service)
        from kexecfw.lab.service import run as run_service
        return run_service(arch, loader, keep=keep, mem=mem, smp=smp, cache=cache, timeout=timeout, log=log)
    # live phases on a terminal, plain lines through ``log`` otherwise (kexecfw.progress)
    default = log is _stderr_log
    with Progress("lab", live=None if default else False, write=None if default else log) as progress:
        result = _run(progress, arch, scenario, loader, compare_kexec_tools, mem, smp, crashkernel, keep,
                      kernel_generation, accel, timeout, silence, cache, load_args, save_vmcore, bench_load,
                      fill_memory, measure_dumps, dump_rounds)
        progress.done(f"{result.arch} {result.scenario}: {'OK' if result.ok else 'FAILED'}")
    return result


def _run(progress: Progress, arch, scenario, loader, compare_kexec_tools, mem, smp, crashkernel, keep,
         kernel_generation, accel, timeout, silence, cache, load_args, save_vmcore, bench_load,
         fill_memory, measure_dumps, dump_rounds=0) -> LabResult:
    log = progress.note
    measure_dumps = measure_dumps or fill_memory or dump_rounds > 0
    if fill_memory and scenario != "panic":
        raise LabError("--fill-memory needs the panic scenario: it fills memory before the crash")
    target = arch_target(arch)
    gen = target_generation(target, kernel_generation)
    if scenario not in SCENARIOS:
        raise LabError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
    if loader not in LOADERS:
        raise LabError(f"unknown loader {loader!r}: use one of {', '.join(LOADERS)}")
    if accel not in ("auto", "tcg", "kvm"):
        raise LabError(f"unknown accelerator {accel!r}: use auto, tcg or kvm")
    cache_path = cache_dir(cache)
    out = Path(keep) if keep else default_results_dir(target.name)
    if out.exists() and any(out.iterdir()):
        raise LabError(f"results directory {out} exists and is not empty: choose another --keep DIR")
    out.mkdir(parents=True, exist_ok=True)
    phases: list[Phase] = []

    t0 = time.monotonic()
    progress.phase("preparing the host and the guest's userland (downloads on first use)")
    ensure_host_tools(target, log)
    userland = prepare_userland(target, gen, cache_path, log)
    phases.append(Phase("prepare host and guest userland", True, True, round(time.monotonic() - t0, 2),
                        f"{userland.kernel_package}, Python {userland.python}"))
    result = LabResult(directory=out, arch=target.name, scenario=scenario, loader=loader,
                       generation=gen.name, kernel_release=userland.release, phases=phases,
                       settings={"mem": mem, "smp": smp, "crashkernel": crashkernel,
                                 "compare_kexec_tools": compare_kexec_tools, "load_args": load_args,
                                 "save_vmcore": save_vmcore, "bench_load": bench_load,
                                 "fill_memory": fill_memory, "measure_dumps": measure_dumps,
                                 "dump_rounds": dump_rounds})

    build_root = cache_path / "build"
    build_root.mkdir(exist_ok=True)
    for stale in build_root.iterdir():  # left by runs that were killed
        if time.time() - stale.stat().st_mtime > STALE_BUILD_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=build_root))
    try:
        marker = f"LAB-EXEC-{uuid.uuid4().hex[:12]}"
        base_args = f"console={target.console} {target.kernel_args}".strip()
        config = {
            "SCENARIO": scenario, "LOADER": loader, "COMPARE": "1" if compare_kexec_tools else "0",
            "LOAD_ARGS": load_args,   # extra `kexecfw load` options, e.g. --classic
            "BENCH_LOAD": str(bench_load),  # rounds of kexec-tools vs kexecfw loads before the real one
            "FILL_MEMORY": "1" if fill_memory else "0",
            "KEXEC_TOOLS_SYSCALL": "" if target.kexec_file_load else "-c",   # kexec_load where no file load
            "CAPTURE_APPEND": f"{base_args} maxcpus=1 reset_devices irqpoll panic=-1 lab.role=capture"
                              + (" lab.save_vmcore=1" if save_vmcore else "")
                              + (" lab.measure_dumps=1" if measure_dumps else "")
                              + (f" lab.dump_rounds={dump_rounds}" if dump_rounds > 0 else ""),
            "SECOND_APPEND": f"{base_args} panic=-1 lab.role=second lab.marker={marker}",
        }
        t1 = time.monotonic()
        progress.phase("building the guest's initramfs")
        initrd, notes = build_initrds(target, userland, workdir, cache_path, config)
        result.notes += notes
        phases.append(Phase("build initramfs", True, True, round(time.monotonic() - t1, 2),
                            f"{initrd.stat().st_size / (1 << 20):.1f} MiB"))
        use_kvm = accel == "kvm" or (accel == "auto" and kvm_usable(target, userland.kernel, cache_path))
        disk = create_disk(workdir / "data.img")
        append = f"{base_args} crashkernel={crashkernel} panic=-1 loglevel=7"
        workaround = EXEC_WORKAROUNDS.get((target.name, gen.name)) if scenario == "exec" else None
        if workaround:
            append += f" {workaround[0]}"
            result.notes.append(f"first kernel booted with {workaround[0]}: {workaround[1]}")
        disks = [Disk(disk, "labdata")]
        if save_vmcore:  # sparse, large enough for every PT_LOAD of a guest with `mem` MiB
            vmcore_disk = create_disk(workdir / "vmcore.img", mem + 64)
            disks.append(Disk(vmcore_disk, "labvmcore"))
        if fill_memory:   # sparse; the guest writes at most 30% of its MemAvailable into it
            disks.append(Disk(create_disk(workdir / "fill.img", mem), "labfill"))
        if measure_dumps:  # sparse; the capture kernel makes an ext2 file system on it for the dumps
            disks.append(Disk(create_disk(workdir / "dumps.img", DUMP_DISK_MIB), "labdump"))
            # a filled guest's steps can be quiet for minutes under TCG (the fill, an 8 GiB dump)
            silence = max(silence, timeout)
        cmd = qemu_command(target, userland.kernel, initrd, append, mem, smp, disks, "kvm" if use_kvm else "tcg")
        (out / "qemu-cmdline.txt").write_text(" ".join(cmd) + "\n")
        log(f"booting {target.name} ({'KVM' if use_kvm else 'TCG'}), {scenario} with {loader}; "
            f"console in {out / 'console.log'}")
        progress.phase(f"booting the first kernel ({'KVM' if use_kvm else 'TCG'})")
        outcome = run_qemu(cmd, out / "console.log", timeout, silence, on_mark=_mark_phases(progress))
        progress.phase("reading the results")
        result.qemu_seconds, result.ended_by = outcome.seconds, outcome.ended_by
        slots = {role: read_slot(disk, offset, out) for role, offset in SLOTS.items()}
        if save_vmcore:
            _keep_vmcore(vmcore_disk, out)
        _analyse(result, outcome, slots, marker)
    finally:
        if not os.environ.get("KEXECFW_LAB_KEEP_BUILD"):
            shutil.rmtree(workdir, ignore_errors=True)
    result.save()
    return result


def _mark_phases(progress: Progress) -> Callable[[str], None]:
    """run_qemu's ``on_mark``: a console mark of MARK_PHASES starts that phase of the progress."""
    def seen(line: str) -> None:
        words = line.split()
        if len(words) > 1 and words[0] == "LAB-MARK" and words[1] in MARK_PHASES:
            progress.phase(MARK_PHASES[words[1]])
    return seen


def _keep_vmcore(disk: Path, out: Path) -> None:
    """The capture kernel's raw copy of /proc/vmcore, cut to the size it reported, as dump/vmcore.elf
    (0600 like every dump: it is the guest's whole memory)."""
    size_file = out / "capture" / "vmcore-size"
    copied = (out / "capture" / "steps.txt")
    if not size_file.is_file() or not copied.is_file() or not any(
            line.split()[:2] == ["vmcore-copy", "0"] for line in copied.read_text().splitlines()):
        return
    (out / "dump").mkdir(exist_ok=True)
    os.chmod(disk, 0o600)
    with open(disk, "r+b") as f:
        f.truncate(int(size_file.read_text().strip()))
    shutil.move(str(disk), out / "dump" / "vmcore.elf")


def _read_steps(out: Path, role: str) -> list[Step]:
    steps: list[Step] = []
    path = out / role / "steps.txt"
    if not path.is_file():
        return steps
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        name, rc, start, end = parts[0], int(parts[1]), float(parts[2]), float(parts[3])
        err = out / role / "steps" / f"{name}.err"
        tail = "\n".join(err.read_text(errors="replace").strip().splitlines()[-3:]) if err.is_file() else ""
        steps.append(Step(role, name, rc, start, end, tail))
    return steps


def _analyse(result: LabResult, outcome: QemuOutcome, slots: dict[str, list[str] | None], marker: str) -> None:
    """Turn what came back (console, marks, data-disk slots) into the result's phases."""
    out = result.directory
    for role in ("first", "capture", "second"):
        result.steps += _read_steps(out, role)
    console = outcome.console.read_text(errors="replace") if outcome.console.exists() else ""
    host = [(t, line.split()[1]) for t, line in outcome.host_marks if line.startswith("LAB-MARK ")]
    seen = [m for _, m in host]

    def at(mark: str, after: float = 0.0) -> float | None:
        return next((t for t, m in host if m == mark and t >= after), None)

    def add(name: str, ok: bool, required: bool = True, seconds: float | None = None, detail: str = "") -> None:
        result.phases.append(Phase(name, ok, required, None if seconds is None else round(seconds, 2), detail))

    def add_step(phase: str, name: str, role: str, required: bool) -> None:
        s = result.step(name, role)
        defect = KNOWN_DEFECTS.get((result.arch, result.loader))
        if defect and defect.step == name and role == "capture":
            _add_known_defect(result, phase, s, defect)
        elif s is None:
            add(phase, False, required, detail="not run")
        else:
            add(phase, s.rc == 0, required, s.seconds, s.stderr_tail.splitlines()[-1] if s.rc and s.stderr_tail else "")

    # (dump rounds name their steps round-I-TOOL: the benchmark's own checks apply)
    must_read = MUST_READ.get(result.arch, ()) if result.loader == "kexecfw" and not result.settings.get(
        "dump_rounds") else ()

    add("boot first kernel to /init", "first-init" in seen, True, at("first-init"))
    snap = result.step("snapshot", "first") or result.step("snapshot-by-copy", "first")
    add_step("snapshot" if snap is None else f"snapshot ({snap.name})", snap.name if snap else "snapshot", "first", True)
    state = {}  # sys/kernel/kexec_* as the first kernel saw them after the load ("name value" lines)
    for line in (result.read_text("first/kexec-state") or "").splitlines():
        name, _, value = line.partition(" ")
        state[name] = value.strip()
    loaded_flag = "kexec_crash_loaded" if result.scenario == "panic" else "kexec_loaded"
    load = result.step("load", "first")
    add(f"load ({result.loader}, {'kexec -p' if result.scenario == 'panic' else 'kexec -l'})",
        bool(load and load.rc == 0 and state.get(loaded_flag) == "1"), True, load.seconds if load else None,
        (load.stderr_tail.splitlines() or [""])[-1] if load and load.rc else f"{loaded_flag}={state.get(loaded_flag, '?')}")
    if result.settings.get("compare_kexec_tools") and result.loader == "kexecfw":
        add_step("kexec-tools load for comparison", "kexec-tools-debug", "first", False)
    add_step("dry-run on the guest's snapshot", "dryrun", "first", False)
    if result.settings.get("fill_memory"):
        add_step("fill memory before the crash", "fill-memory", "first", True)
    add("first kernel's results saved", slots.get("first") is not None, True)

    if result.scenario == "panic":
        crash_t, capture_t = at("crash"), at("capture-init")
        add("crash -> capture kernel /init", capture_t is not None, True,
            capture_t - crash_t if capture_t is not None and crash_t is not None else None)
        size = result.vmcore_size()
        add("/proc/vmcore", bool(size), True, detail=f"{size} bytes" if size else "missing")
        add_step("vmcore headers and notes", "vmcore-headers", "capture", True)
        for what in ("info", "notes", "dmesg", "save"):
            add_step(f"kexecfw vmcore {what}", f"kexecfw-vmcore-{what}", "capture", False)
        if result.settings.get("measure_dumps"):
            add_step("kexecfw vmcore save -c zstd", "kexecfw-vmcore-save-zstd", "capture", False)
        add_step("vmcore-dmesg (kexec-tools)", "vmcore-dmesg", "capture", False)
        add_step("makedumpfile -c", "makedumpfile", "capture", "makedumpfile" in must_read)
        if not result.settings.get("measure_dumps"):
            add_step("makedumpfile reads kexecfw's saved dump", "makedumpfile-reads-kexecfw", "capture",
                     "makedumpfile-reads-kexecfw" in must_read)
        add("capture kernel's results saved", slots.get("second") is not None and (out / "capture").is_dir(), True)
    else:
        exec_t, second_t = at("exec"), at("second-init")
        add("exec -> second kernel /init", second_t is not None, True,
            second_t - exec_t if second_t is not None and exec_t is not None else None)
        seen_marker = f"EXEC-MARKER {marker}" in console
        add("marker on the second kernel's console", seen_marker, True, detail=marker)
    add(f"QEMU ({result.ended_by})", result.ended_by == "exit", True, result.qemu_seconds)

    failed = [p for p in result.phases if p.required and not p.ok]
    result.ok = not failed
    if failed:
        tail = outcome.tail(12)
        result.failure = f"{failed[0].name} failed" + (f" ({failed[0].detail})" if failed[0].detail else "")
        if result.ended_by != "exit":
            result.failure += f"; QEMU ended by {result.ended_by} after {result.qemu_seconds} s"
        result.notes.append("console tail:\n" + tail)
    _write_timings(result, host)


def _add_known_defect(result: LabResult, phase: str, step: Step | None, defect: KnownDefect) -> None:
    """The phase of a step that must fail with ``defect.message``: passed when it did (its lines that
    say so are the detail), failed when it ran clean or failed otherwise."""
    name = f"{phase}: fails as known"
    if step is None:
        result.phases.append(Phase(name, False, True, None, "not run"))
        return
    stderr = result.read_text(f"capture/steps/{defect.step}.err") or step.stderr_tail
    said = [line.strip() for line in stderr.splitlines() if defect.message in line]
    if step.rc != 0 and said:
        detail = f"{said[0]} (exit {step.rc}; {defect.why})"
    elif step.rc == 0:
        detail = f"it succeeded: the known defect ({defect.message}) did not show"
    else:
        last = (stderr.strip().splitlines() or ["no message"])[-1]
        detail = f"exit {step.rc} without {defect.message!r}: {last}"
    result.phases.append(Phase(name, step.rc != 0 and bool(said), True, round(step.seconds, 2), detail))


def _write_timings(result: LabResult, host: list[tuple[float, str]]) -> None:
    phases, previous = [], 0.0
    for t, mark in host:
        phases.append({"until": mark, "host_seconds": round(t - previous, 3), "at": t})
        previous = t
    timings = {
        "schema": 1,
        "qemu_seconds": result.qemu_seconds,
        "phases": [{"name": p.name, "seconds": p.seconds} for p in result.phases],
        "host_marks": phases,
        "guest_steps": [{"role": s.role, "name": s.name, "seconds": s.seconds, "rc": s.rc} for s in result.steps],
    }
    (result.directory / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
