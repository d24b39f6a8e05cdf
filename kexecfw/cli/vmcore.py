"""``kexecfw vmcore info|notes|dmesg|save [FILE]``: read a crash dump (default /proc/vmcore) or save it.

Nothing is imported here at run time (argparse only for type checking: ``vmcore dmesg FILE``
is dispatched to :func:`dmesg` without argparse, see :mod:`kexecfw.cli`); each action imports the
readers it needs, so ``vmcore dmesg`` loads neither pluggy nor pyelftools.
"""
from __future__ import annotations

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the dmesg path does not import typing
if TYPE_CHECKING:
    import argparse

ARCH_NAMES = {62: "x86_64", 183: "arm64"}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vmcore_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print a JSON document on stdout")
        return p

    p = add("info", "what the dump is: format, kernel, crash time, memory, log")
    p.add_argument("file", nargs="*", default=None, metavar="FILE",
                   help="dump file (default /proc/vmcore); all files of a makedumpfile --split set")

    p = add("notes", "per-CPU registers at the crash (NT_PRSTATUS) and the panicking CPU")
    p.add_argument("file", nargs="*", default=None, metavar="FILE",
                   help="dump file (default /proc/vmcore); all files of a makedumpfile --split set")
    p.add_argument("--online-cpus", metavar="LIST",
                   help="the crashed kernel's online CPUs (e.g. 0-3) to name each note's CPU exactly")
    p.add_argument("--all", action="store_true", help="show every register, not only pc/sp/lr")
    p.add_argument("--no-symbols", action="store_true",
                   help="do not read the kernel's kallsyms tables to name pc/lr and find each note's CPU")
    p.add_argument("--plot", metavar="PNG", help="draw the registers per CPU and the log's tail into PNG "
                   "(the path is printed on stderr)")

    p = add("dmesg", "the crashed kernel's log (same output as kexec-tools' vmcore-dmesg)")
    p.add_argument("file", nargs="*", default=None, metavar="FILE",
                   help="dump file (default /proc/vmcore); all files of a makedumpfile --split set")
    p.add_argument("--kernel-style", action="store_true",
                   help="prefix every line of multi-line records, like the kernel's console")
    p.add_argument("--level", action="store_true", help="show <syslog level> (implies --kernel-style)")
    p.add_argument("--caller", action="store_true", help="show the caller id [T<pid>]/[C<cpu>] "
                   "(implies --kernel-style)")
    p.add_argument("--makedumpfile", action="store_true",
                   help="format like makedumpfile --dump-dmesg (1.7.2: continuation lines indented)")

    p = add("save", "save the dump: kdump-compressed (readable by makedumpfile, crash, drgn) or ELF")
    p.add_argument("out", nargs="?", default=None, metavar="OUT",
                   help="output file (or use --dir); - with --flat: stdout")
    p.add_argument("--input", "-i", default=None, action="append", metavar="FILE",
                   help="dump to read (default /proc/vmcore); repeat for every file of a split set")
    p.add_argument("-d", "--dump-level", type=int, default=31, metavar="LEVEL",
                   help="makedumpfile -d bits: 1 zero, 2 cache, 4 cache private, 8 user, 16 free (default 31)")
    p.add_argument("-c", "--compress", default="zlib", choices=["zlib", "zstd", "lzo", "none"],
                   help="page compression (default zlib, which every reader supports)")
    p.add_argument("--elf", action="store_true", help="write an ELF dump instead of kdump-compressed")
    p.add_argument("--flat", action="store_true",
                   help="write makedumpfile's flattened stream (-F) to stdout (OUT is -), e.g. into "
                        "ssh host 'cat > vmcore.flat'; kexecfw reads it as it is, makedumpfile -R rebuilds the file")
    p.add_argument("-f", "--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="compression threads (default: the CPUs this process may run on, at most 8)")
    p.add_argument("--dir", default=None, metavar="DIR",
                   help="save flow: make DIR/<timestamp>/ with the dump, dmesg.txt and summary.json")
    p.add_argument("--keep", type=int, default=3, metavar="N", help="with --dir: keep the last N dumps")
    p.add_argument("--min-free", default="256M", metavar="SIZE",
                   help="with --dir: refuse to leave less than SIZE free on its filesystem")
    p.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="progress on stderr (auto: when stderr is a terminal)")


def run(args: argparse.Namespace) -> int:
    action = args.vmcore_command
    if action == "info":
        return _info(args)
    if action == "notes":
        return _notes(args)
    if action == "dmesg":
        return _dmesg(args)
    from kexecfw.vmcore.save import run_save_cli
    return run_save_cli(args)


def _path(args: argparse.Namespace) -> list[str]:
    from kexecfw.vmcore import default_dump_path
    return args.file or [default_dump_path()]


def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def _warn(msg: str) -> None:
    import sys
    print(f"kexecfw: warning: {msg}", file=sys.stderr)


def _dmesg(args: argparse.Namespace) -> int:
    return dmesg(_path(args), as_json=args.json, kernel_style=args.kernel_style or args.level or args.caller,
                 show_level=args.level, show_caller=args.caller, makedumpfile=args.makedumpfile)


def dmesg(paths: list[str], as_json: bool = False, kernel_style: bool = False, show_level: bool = False,
          show_caller: bool = False, makedumpfile: bool = False) -> int:
    """``vmcore dmesg``: print the log of the dump in ``paths`` (one file or a split set)."""
    import sys

    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.dmesg import dmesg_bytes, log_kind, records
    from kexecfw.vmcore.kmem import KernelMemory
    with open_dump(paths) as dump:
        mem = KernelMemory(dump)
        if as_json:
            import json
            if log_kind(mem) == "legacy":
                doc = {"schema": 1, "kind": "legacy", "text": dmesg_bytes(mem, _warn).decode("utf-8", "replace")}
            else:
                doc = {"schema": 1, "kind": log_kind(mem), "records": [
                    {"seq": r.seq, "ts_nsec": r.ts_nsec, "level": r.level, "facility": r.facility,
                     "caller_id": r.caller_id, "text": r.text.decode("utf-8", "replace")}
                    for r in records(mem, _warn)]}
            print(json.dumps(doc, indent=1))
            return 0
        out = dmesg_bytes(mem, _warn, kernel_style=kernel_style, show_level=show_level, show_caller=show_caller,
                          makedumpfile=makedumpfile)
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


def _cpu_states(dump, online_text: str | None, log: bytes | None, symbols: bool = True):
    from kexecfw.vmcore.prstatus import describe_cpus
    online = None
    if online_text:
        from kexecfw.sysroot import parse_cpu_list
        online = parse_cpu_list(online_text)
    return describe_cpus(dump, online, log, symbols)


def _log_or_none(dump) -> bytes | None:
    from kexecfw.errors import KexecfwError
    from kexecfw.vmcore.dmesg import dmesg_bytes
    from kexecfw.vmcore.kmem import KernelMemory
    try:
        return dmesg_bytes(KernelMemory(dump))
    except KexecfwError:
        return None


def _notes(args: argparse.Namespace) -> int:
    import json

    from kexecfw.vmcore import open_dump
    with open_dump(_path(args)) as dump:
        states, known, panic, ksyms, exact = _cpu_states(dump, args.online_cpus, _log_or_none(dump),
                                                         not args.no_symbols)

    def sym(v: int | None) -> str | None:
        return ksyms.lookup(v) if ksyms is not None and v is not None else None

    if args.plot:
        from kexecfw.viz.crash import draw_crash_notes, read_crash_notes
        from kexecfw.viz.render import save_plot
        save_plot(draw_crash_notes(read_crash_notes(_path(args), args.online_cpus, not args.no_symbols)),
                  args.plot, "the registers per CPU and the log's tail")
    if args.json:
        doc = {"schema": 1, "cpus_known": known,
               "cpu_mapping": "crash_notes in memory" if exact else ("--online-cpus" if known else "assumed 0..n-1"),
               "panic": None if panic is None else {"cpu": panic[0], "pid": panic[1], "comm": panic[2]},
               "cpus": [{"cpu": s.cpu, "note_index": s.index, "pid": s.pid, "panic": s.panic,
                         "pc": _hex(s.pc), "sp": _hex(s.sp), "lr": _hex(s.lr),
                         "pc_symbol": sym(s.pc), "lr_symbol": sym(s.lr),
                         **({"registers": {k: _hex(v) for k, v in s.registers.items()}} if args.all else {})}
                        for s in states]}
        print(json.dumps(doc, indent=1))
        return 0
    if not states:
        print("no NT_PRSTATUS notes in this dump")
        return 0
    has_lr = any(s.lr is not None for s in states)
    head = f"{'CPU':>4} {'PID':>7}  {'PC':<18} {'SP':<18}" + (f" {'LR':<18}" if has_lr else "")
    print(head + ("  SYMBOL" if ksyms else ""))
    for s in states:
        line = f"{s.cpu:>4} {s.pid:>7}  {_hex(s.pc) or '-':<18} {_hex(s.sp) or '-':<18}"
        if has_lr:
            line += f" {_hex(s.lr) or '-':<18}"
        if ksyms is not None:
            line += f"  {sym(s.pc) or '?'}" + (f" <- {sym(s.lr) or '?'}" if has_lr else "")
        print(line + ("  <- panic" if s.panic else ""))
        if args.all:
            for k, v in s.registers.items():
                print(f"{'':>14}{k:>8} = {v:#018x}")
    if panic is not None:
        print(f"panic: CPU {panic[0]}, PID {panic[1]} ({panic[2]})")
    if exact:
        print("CPU numbers: from the per-CPU crash note buffers in the dump")
    elif not known:
        print("CPU numbers assume every CPU 0..n-1 was online at the crash; pass --online-cpus to be exact")
    return 0


def _info(args: argparse.Namespace) -> int:
    import json
    import time

    from kexecfw.errors import KexecfwError
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.kmem import KernelMemory
    with open_dump(_path(args)) as dump:
        info = dump.vmcoreinfo
        # a kdump file's ranges come from walking its bitmap: count its pages instead
        ranges = [] if hasattr(dump, "dumped_pages") else dump.ranges()
        doc: dict = {"schema": 1, "file": dump.path, "format": dump.format,
                     "arch": ARCH_NAMES.get(dump.machine, f"machine {dump.machine}"),
                     "osrelease": info.osrelease, "build_id": info.build_id, "page_size": dump.page_size,
                     "crash_time": info.crash_time,
                     "kernel_offset": _hex(info.kernel_offset),
                     "cpus_with_notes": len(dump.prstatus_notes()),
                     "memory_ranges": len(ranges) if ranges else None,
                     "memory_bytes": (sum(r.end - r.start for r in ranges) if ranges
                                      else getattr(dump, "dumped_pages", 0) * dump.page_size)}
        for key in ("dump_level", "compression", "incomplete", "dumped_pages"):
            if hasattr(dump, key):
                doc[key] = getattr(dump, key)
        doc.update(_completeness(dump))
        try:
            mem = KernelMemory(dump)
            doc["utsname"] = mem.utsname()
            from kexecfw.vmcore.dmesg import log_kind
            doc["log"] = log_kind(mem)
        except KexecfwError as e:
            doc["utsname_error"] = e.message
        doc["panic"] = _panic(dump)
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    when = "unknown"
    if doc["crash_time"]:
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["crash_time"]))
        except (OverflowError, OSError, ValueError):      # CRASHTIME is the crashed kernel's word
            when = f"{doc['crash_time']} (not a time this system can show)"
    panic = doc["panic"]
    if panic is not None:
        print(f"panic:       {panic['line']}")
        if panic["cpu"] is not None:
            print(f"task:        CPU {panic['cpu']}, PID {panic['pid']} ({panic['comm']})")
        for i, line in enumerate(panic["lead"]):
            print(f"{'led by:' if i == 0 else '':<12} {line}")
    else:
        print("panic:       no panic or oops line in the log" + ("" if "log" in doc else " (the log cannot be read)"))
    print(f"file:        {doc['file']} ({doc['format']})")
    print(f"arch:        {doc['arch']}, page size {doc['page_size']}")
    print(f"kernel:      {doc['osrelease']}" + (f" ({doc['utsname']['version']})" if "utsname" in doc else ""))
    if "utsname" in doc:
        print(f"host:        {doc['utsname']['nodename']}")
    print(f"crash time:  {when}")
    print(f"KASLR:       offset {doc['kernel_offset'] or 'none'}")
    print(f"CPUs:        {doc['cpus_with_notes']} with crash notes")
    where = f" in {doc['memory_ranges']} ranges" if doc["memory_ranges"] else " of pages dumped"
    print(f"memory:      {doc['memory_bytes'] / (1 << 20):.1f} MiB{where}")
    if "log" in doc:
        print(f"log buffer:  {doc['log']}")
    for key in ("dump_level", "compression", "dumped_pages"):
        if key in doc:
            print(f"{key.replace('_', ' ') + ':':<12} {doc[key]}")
    if doc.get("incomplete"):
        lost = f"{doc['lost_pages']} pages lost; " if doc.get("lost_pages") else ""
        print(f"incomplete:  yes: {lost}{doc.get('missing') or 'their data is past the end of the file or corrupt'}")
        if "truncated_at" in doc:
            print(f"data ends:   at {doc['truncated_at']}, the dump's data runs to {doc['data_runs_to']}")
    elif "incomplete" in doc:
        print("incomplete:  no")
    return 0


def _panic(dump) -> dict | None:
    """The crash as the log tells it (kexecfw.vmcore.prstatus.panic_report), for ``info``."""
    from kexecfw.vmcore.prstatus import panic_report
    log = _log_or_none(dump)
    report = panic_report(log) if log else None
    return None if report is None else report.to_json()


def _completeness(dump) -> dict:
    """Is the dump whole: what its headers say is missing, how many pages are lost (pages the dump
    describes that are not in the file: its descriptors are checked, no page is decompressed), and
    where the file ends against where its data should run to."""
    parts = getattr(dump, "parts", [dump])
    missing = dump.missing_memory()
    doc: dict = {}
    if hasattr(parts[0], "scan_lost"):
        lost, runs_to = 0, 0
        for part in parts:
            n, end = part.scan_lost()
            lost += n
            runs_to = max(runs_to, end)
        ends_at = max(part._io.size for part in parts) if runs_to else 0
    else:
        lost = dump.lost_pages()
        runs_to, ends_at = (dump.data_end, dump.size) if getattr(dump, "truncated_at", None) is not None else (0, 0)
    if missing or lost:
        doc.update({"incomplete": True, "missing": missing, "lost_pages": lost})
    if runs_to:
        doc.update({"truncated_at": _hex(ends_at), "data_runs_to": _hex(runs_to)})
    return doc
