"""``kexecfw vmcore save``: one dump file, its flattened stream to stdout (``--flat -``, as
makedumpfile -F: DumpWriter.write_flat, the path the kdump ssh target takes), or the save flow into a
crash directory.

Save flow (``--dir /var/crash``): makes ``DIR/<UTC timestamp>/`` holding ``dmesg.txt``
(written first: it is small and the most useful part if the disk fills up), the
dump (``vmcore.kdump`` or ``vmcore.elf``) and ``summary.json`` (kernel release,
crash time, panic CPU, per-CPU pc/sp, dump level, sizes, timings, complete or not).
The dump may use the filesystem's free space minus the floor (``--min-free``);
past that it stops and is marked incomplete exactly as on a full disk. After a
complete save only the newest ``--keep`` crash directories made by kexecfw
(those with a summary.json) are kept. A save that fails leaves no empty directory: the crash
directory stays only when it holds something (dmesg.txt, and summary.json saying what failed).
Every file appears under its final name only once it is whole (written beside it, then renamed).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

from kexecfw.cli.common import human_size
from kexecfw.errors import BadInputError, KexecfwError, NoSpaceError
from kexecfw.sizes import parse_size
from kexecfw.vmcore import default_dump_path, open_dump
from kexecfw.vmcore.phases import PhaseTimes, mark, process_age
from kexecfw.vmcore.writer import DumpIncomplete, DumpWriter, output_error

STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


def atomic_write(path: str, data: bytes) -> None:
    """``data`` as ``path``: written to a hidden file beside it, synced, then renamed."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise output_error(e, f"cannot write {path}") from None


def _makedirs(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700)
    except OSError as e:
        raise output_error(e, f"cannot create {path}") from None


def release_and_log(dump) -> tuple[dict, bytes | None]:
    """The kernel release and crash time from ``dump``'s VMCOREINFO, and its log (best effort: what
    cannot be read is an "error" entry, never an exception)."""
    from kexecfw.vmcore.dmesg import dmesg_bytes
    from kexecfw.vmcore.kmem import KernelMemory
    out: dict = {}
    log = None
    try:
        info = dump.vmcoreinfo
        out["osrelease"] = info.osrelease
        out["crash_time"] = info.crash_time
        log = dmesg_bytes(KernelMemory(dump))
    except KexecfwError as e:
        out["error"] = e.message
    return out, log


def crash_summary(dump, symbols: bool = True) -> tuple[dict, bytes | None]:
    """Kernel, crash time, panic CPU and per-CPU pc/sp of ``dump`` (best effort, never raises).

    ``symbols``: also name each pc and find each note's CPU from kallsyms (half a second on
    real hardware, several seconds in an emulated capture kernel).
    """
    out, log = release_and_log(dump)
    try:
        from kexecfw.vmcore.prstatus import describe_cpus
        states, known, panic, ksyms, exact = describe_cpus(dump, None, log, symbols)
        sym = (lambda v: ksyms.lookup(v) if ksyms is not None and v is not None else None)  # noqa: E731
        out["panic_cpu"] = panic[0] if panic else None
        out["cpus_known"] = known
        out["cpus"] = [{"cpu": s.cpu, "pid": s.pid, "pc": None if s.pc is None else f"{s.pc:#x}",
                        "sp": None if s.sp is None else f"{s.sp:#x}", "pc_symbol": sym(s.pc), "panic": s.panic}
                       for s in states]
    except KexecfwError as e:
        out.setdefault("error", e.message)
    return out, log


def save_file(input_path: str, out: str, *, dump_level: int, compress: str, elf: bool, threads: int,
              progress: bool, byte_limit: int | None = None) -> dict:
    before = PhaseTimes()
    age = process_age()
    started = mark()
    with open_dump(input_path) as dump:
        before.add("open", started)
        started = mark()
        summary, _ = crash_summary(dump, symbols=False)     # the header only needs the panic CPU
        before.add("summary", started)
        writer = DumpWriter(dump, dump_level, compress, elf, threads, progress,
                            panic_cpu=summary.get("panic_cpu") or 0, byte_limit=byte_limit)
        # "-": the flattened stream to stdout, which may be a pipe (nothing is sought)
        stats = writer.write_flat(sys.stdout.fileno(), "stdout") if out == "-" else writer.write(out)
        stats["phases"] = before.report() + stats["phases"]
    if age is not None:
        stats["started_after_seconds"] = round(age, 2)     # the process's start-up before the save began
    return {**summary, **stats}


def save_flow(input_path: str, base: str, *, dump_level: int, compress: str, elf: bool, threads: int,
              progress: bool, keep: int, min_free: int) -> dict:
    made_base = not os.path.isdir(base)
    if made_base:
        _makedirs(base)
    try:
        st = os.statvfs(base)
        free = st.f_bavail * st.f_frsize
        if free <= min_free:
            raise NoSpaceError(f"{base} has {human_size(free)} free, not more than the {human_size(min_free)} "
                               "floor (--min-free): free space or lower the floor")
        with open_dump(input_path) as dump:
            summary = _save_into(dump, input_path, base, dump_level=dump_level, compress=compress, elf=elf,
                                 threads=threads, progress=progress, min_free=min_free)
    except BaseException:
        if made_base:
            _remove_empty(base)
        raise
    summary["removed"] = prune(base, keep)
    return summary


def _save_into(dump, input_path, base: str, *, dump_level: int, compress: str, elf: bool, threads: int,
               progress: bool, min_free: int) -> dict:
    """The crash directory of ``dump`` in ``base``; on failure it is removed unless it holds the log."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = os.path.join(base, stamp)
    n = 1
    while os.path.exists(target):
        target = os.path.join(base, f"{stamp}-{n}")
        n += 1
    _makedirs(target)
    t0 = time.monotonic()
    summary: dict = {}
    writer = None
    try:
        summary, log = crash_summary(dump, symbols=False)
        if log is not None:
            atomic_write(os.path.join(target, "dmesg.txt"), log)
        summary.update({"schema": 1, "input": input_path if isinstance(input_path, str) else ",".join(input_path),
                        "dump_level": dump_level,
                        "compression": "none" if elf else compress, "complete": False})
        name = "vmcore.elf" if elf else "vmcore.kdump"
        # what the dump may use: the free space now minus the floor (and what dmesg.txt took)
        try:
            st = os.statvfs(target)
        except OSError as e:
            raise output_error(e, f"cannot read the free space of {target}") from None
        budget = st.f_bavail * st.f_frsize - min_free
        writer = DumpWriter(dump, dump_level, compress, elf, threads, progress,
                            panic_cpu=summary.get("panic_cpu") or 0, byte_limit=max(budget, 0))
        stats = writer.write(os.path.join(target, name))
        summary["complete"] = True
    except BaseException as e:
        if isinstance(e, KexecfwError) and _holds_something(target):
            # the log and the dump of an incomplete (or failed) save are worth keeping: say what happened
            summary.update({"dump": writer.stats if writer is not None else {}, "failed": e.message,
                            "seconds": round(time.monotonic() - t0, 3)})
            try:
                atomic_write(os.path.join(target, "summary.json"), json.dumps(summary, indent=1).encode())
            except KexecfwError:
                pass
        else:
            import shutil    # (bz2 and lzma with it: not imported by a save that goes well)
            shutil.rmtree(target, ignore_errors=True)
        raise
    # symbols and exact CPU numbers once the dump is safe on disk
    summary.update(crash_summary(dump, symbols=True)[0])
    summary.update({"dump": stats, "seconds": round(time.monotonic() - t0, 3), "directory": target})
    atomic_write(os.path.join(target, "summary.json"), json.dumps(summary, indent=1).encode())
    return summary


def _holds_something(directory: str) -> bool:
    """Does ``directory`` hold a file under its final name (not a hidden partial one)?"""
    try:
        return any(not name.startswith(".") for name in os.listdir(directory))
    except OSError:
        return False


def _remove_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass     # not empty (or already gone): nothing of ours to clean


def prune(base: str, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` crash directories kexecfw made in ``base``."""
    if keep <= 0:
        return []
    ours = sorted(d for d in os.listdir(base)
                  if STAMP.match(d) and os.path.isfile(os.path.join(base, d, "summary.json")))
    removed = []
    import shutil
    for d in ours[:-keep]:
        shutil.rmtree(os.path.join(base, d), ignore_errors=True)
        removed.append(d)
    return removed


def run_save_cli(args) -> int:
    input_path = args.input or [default_dump_path()]
    progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty() and not args.json)
    common = dict(dump_level=args.dump_level, compress=args.compress, elf=args.elf, threads=args.threads,
                  progress=progress)
    to_stdout = args.out == "-"
    if args.flat and (args.dir or not to_stdout):
        raise BadInputError("--flat writes the flattened stream to stdout: give - as OUT (no --dir)")
    if to_stdout and not args.flat:
        raise BadInputError("a dump file cannot go to stdout (its header and bitmap are rewritten at the end): "
                            "add --flat for makedumpfile's flattened stream")
    if args.dir:
        if args.out:
            raise BadInputError("give OUT or --dir, not both")
        result = save_flow(input_path, args.dir, keep=args.keep, min_free=parse_size(args.min_free), **common)
    else:
        if not args.out:
            raise BadInputError("vmcore save needs OUT (a file) or --dir DIR")
        if not to_stdout and os.path.exists(args.out) and not args.force:
            raise BadInputError(f"{args.out} exists: choose another name or pass --force to replace it")
        result = save_file(input_path, args.out, **common)
    report = sys.stderr if to_stdout else sys.stdout       # stdout holds the dump
    if args.json:
        print(json.dumps({"schema": 1, **result}, indent=1), file=report)
    else:
        dump = result.get("dump", result)
        how = f"{dump.get('format')}, level {dump.get('dump_level')}"
        if dump.get("format") == "kdump":
            how += f", {dump.get('compression')}: {dump.get('engine')}"
        print(f"saved {dump['path']}: {dump['pages_written']} pages, {dump['size'] / (1 << 20):.1f} MiB "
              f"({how}) in {dump['seconds']} s", file=report)
        if result.get("directory"):
            print(f"crash directory: {result['directory']}", file=report)
    unfiltered = result.get("dump", result).get("excluded_no_mem_map", 0)
    if unfiltered:
        # the dump is whole, but the level was not applied to these pages: say so rather than let the
        # header's dump level suggest they were filtered
        print(f"kexecfw: warning: {unfiltered} pages were kept unfiltered: their struct pages are not in the "
              f"dump (its mem_section or mem_map cannot be read), so level {args.dump_level} could not "
              "classify them", file=sys.stderr)
    return 0
