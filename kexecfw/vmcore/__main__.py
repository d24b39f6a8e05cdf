"""``python -m kexecfw.vmcore dmesg [FILE...]``: the log without building the whole CLI.

Same output and options as ``python -m kexecfw vmcore dmesg``; it skips argparse's
construction of every kexecfw command, which is most of the start-up of the full CLI,
for capture-kernel scripts that only want the log as fast as vmcore-dmesg gives it.
Anything else is handed to the full CLI.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    flags = {"--kernel-style", "--level", "--caller", "--makedumpfile"}
    if not argv or argv[0] != "dmesg" or any(a.startswith("-") and a not in flags for a in argv[1:]):
        from kexecfw.cli import main as full
        return full(["vmcore", *argv])
    from kexecfw.errors import KexecfwError
    files = [a for a in argv[1:] if not a.startswith("-")]
    opts = set(argv[1:]) & flags
    try:
        from kexecfw.vmcore import default_dump_path, open_dump
        from kexecfw.vmcore.dmesg import dmesg_bytes
        from kexecfw.vmcore.kmem import KernelMemory
        with open_dump(files or [default_dump_path()]) as dump:
            out = dmesg_bytes(KernelMemory(dump), lambda m: print(f"kexecfw: warning: {m}", file=sys.stderr),
                              kernel_style=bool(opts & {"--kernel-style", "--level", "--caller"}),
                              show_level="--level" in opts, show_caller="--caller" in opts,
                              makedumpfile="--makedumpfile" in opts)
    except KexecfwError as e:
        print(f"kexecfw: error: {e.message}", file=sys.stderr)
        return int(e.exit_code)
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
