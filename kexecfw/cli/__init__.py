"""``python -m kexecfw`` / ``kexecfw``: argparse subcommands, errors as one line.

Each subcommand lives in its own module under ``kexecfw.cli`` with two
functions: ``configure(parser)`` adds its arguments and ``run(args) -> int``
does the work. Command modules import only argparse at module level; what a
command needs is imported inside ``run`` so that ``vmcore dmesg`` in a capture
kernel does not pay for pyelftools or matplotlib.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from kexecfw.errors import ExitCode, KexecfwError

# (name, module, one-line help). Order is the order of `kexecfw --help`.
COMMANDS: list[tuple[str, str, str]] = [
    ("load", "kexecfw.cli.load", "plan, validate and load a kernel (kexec -l / -p)"),
    ("unload", "kexecfw.cli.unload", "unload the loaded kernel (kexec -u)"),
    ("exec", "kexecfw.cli.exec_", "reboot into the loaded kernel (kexec -e)"),
    ("status", "kexecfw.cli.status", "is a kernel / crash kernel loaded (kexec -S)"),
    ("memmap", "kexecfw.cli.memmap", "show the memory map kexec plans against"),
    ("snapshot", "kexecfw.cli.snapshot", "copy this system's /proc and /sys files into a sysroot"),
    ("plugins", "kexecfw.cli.plugins", "list plugins, their architectures and hooks"),
    ("vmcore", "kexecfw.cli.vmcore", "read a crash dump: info, notes, dmesg, save"),
    ("crashkernel", "kexecfw.cli.crashkernel", "parse crashkernel= or estimate the size to reserve"),
    ("lab", "kexecfw.cli.lab", "run real kernels in QEMU: load, crash, capture"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kexecfw", description="kexec and kdump, with architectures as plugins.")
    parser.add_argument("--sysroot", default="/", metavar="DIR",
                        help="read /proc and /sys from DIR instead of the live system (never syscalls then)")
    parser.add_argument("--arch", default=None,
                        help="architecture plugin to use (default: the sysroot's proc/kcore machine, else the host)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # a command whose module is not there yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except KexecfwError as e:
        print(f"kexecfw: error: {e.message}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print("kexecfw: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # stdout closed early (`| head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
