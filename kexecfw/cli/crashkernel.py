"""``kexecfw crashkernel parse|estimate``: the kernel's crashkernel= rules, and how much to reserve."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ck_command", metavar="ACTION", required=True)
    p = sub.add_parser("parse", help="what the kernel reserves for a crashkernel= value on a system",
                       description="Parse crashkernel= exactly like the kernel (last one wins, ranges match "
                                   "RAM rounded up to 128 MiB, ,high/,low).")
    p.add_argument("value", metavar="STRING", help="crashkernel=... (or only its value, or a whole command line)")
    p.add_argument("--ram", required=True, metavar="SIZE", help="system RAM the kernel sees (e.g. 2G, 1536M)")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    _arch_option(p, "whose crashkernel= rules apply (the default ,low size); default x86_64")
    p = sub.add_parser("estimate", help="size a crashkernel= reservation for a capture kernel and initrd",
                       description="Estimate the reservation (formula in kexecfw.crashkernel).")
    p.add_argument("--kernel", required=True, metavar="K", help="capture kernel image")
    p.add_argument("--initrd", metavar="I", help="capture initrd")
    p.add_argument("--cpus", type=int, default=1, metavar="N", help="CPUs the capture kernel brings up (default 1)")
    p.add_argument("--ram", default="0", metavar="SIZE", help="RAM of the system to dump (for the writer's bitmaps)")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    _arch_option(p, "the architecture the kernel must be built for (default: the kernel's own)")


def _arch_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """--arch after the action too (the global one works before `crashkernel`); SUPPRESS keeps the
    global value when this one is not given."""
    p.add_argument("--arch", default=argparse.SUPPRESS, metavar="ARCH", help=f"arm64 or x86_64: {help_text}")


def _arch(args: argparse.Namespace) -> str | None:
    from kexecfw.crashkernel import DEFAULT_LOW
    from kexecfw.errors import UsageError
    if args.arch is not None and args.arch not in DEFAULT_LOW:
        raise UsageError(f"--arch {args.arch}: crashkernel knows the rules of {' and '.join(sorted(DEFAULT_LOW))}")
    return args.arch


def _size(text: str) -> int:
    from kexecfw.crashkernel import memparse
    from kexecfw.errors import BadInputError
    t = text.strip()
    if t.lower().endswith("ib"):
        t = t[:-2]
    elif t.lower().endswith("b") and len(t) > 1 and t[-2].isalpha():
        t = t[:-1]
    value, end = memparse(t)
    if end != len(t) or end == 0:
        raise BadInputError(f"size {text!r} is not a number with an optional K/M/G/T suffix")
    return value


def run(args: argparse.Namespace) -> int:
    import json

    from kexecfw import crashkernel as ck
    arch = _arch(args)
    if args.ck_command == "parse":
        arch = arch or "x86_64"
        res = ck.parse(args.value, _size(args.ram), arch)
        if args.json:
            print(json.dumps({"schema": 1, "arch": arch, **res.as_dict()}, indent=1))
            return 0
        if not res.size:
            print(f"nothing reserved ({res.source or 'no crashkernel='} with {res.ram_rounded >> 20} MiB of RAM)")
            return 0
        where = f" at {res.base:#x}" if res.base is not None else ""
        print(f"{res.size >> 20} MiB{where}" + (" above 4 GiB (,high)" if res.high else "") + f"  [{res.source}]")
        if res.matched:
            lo, hi = res.matched
            print(f"range {lo >> 20}M-{'' if hi == ck.ULLONG_MAX else str(hi >> 20) + 'M'} matched "
                  f"{res.ram_rounded >> 20} MiB (RAM rounded up to 128 MiB)")
        if res.low is not None:
            print(f"low: {res.low >> 20} MiB" + (" (architecture default)" if res.low_default else ""))
        return 0
    est = ck.estimate(args.kernel, args.initrd, args.cpus, _size(args.ram), arch)
    if args.json:
        print(json.dumps({"schema": 1, **est}, indent=1))
        return 0
    mib = lambda v: f"{v / (1 << 20):8.1f} MiB"  # noqa: E731
    print(f"kernel   {mib(est['kernel'])}  ({est['kernel_source']})")
    print(f"initrd   {mib(est['initrd_compressed'] + (est['initrd_uncompressed'] or est['initrd_compressed']))}"
          f"  (compressed {mib(est['initrd_compressed']).strip()}, unpacked "
          f"{mib(est['initrd_uncompressed']).strip()})")
    print(f"runtime  {mib(est['runtime'])}")
    print(f"cpus     {mib(est['per_cpu'] * est['cpus'])}  ({est['cpus']} x 1 MiB)")
    print(f"bitmaps  {mib(est['bitmaps'])}")
    print(f"total    {mib(est['total'])}  -> crashkernel={est['crashkernel']}")
    return 0
