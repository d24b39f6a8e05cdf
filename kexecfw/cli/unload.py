"""``kexecfw unload``: like ``kexec -u`` (``-p`` for the crash kernel)."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--panic", action="store_true", help="unload the crash kernel")
    p.add_argument("--file-load", action="store_true", help="unload through kexec_file_load")


def run(args: argparse.Namespace) -> int:
    import sys

    from kexecfw.cli.common import require_live_root, sysroot_of
    from kexecfw.load import resolve_arch
    from kexecfw.pluginmanager import Hooks
    from kexecfw.syscalls import current_layer, lockdown_mode

    sysroot = sysroot_of(args)
    require_live_root(sysroot, "unload")
    arch = resolve_arch(Hooks(), sysroot, args.arch)
    # Under lockdown kexec_load is blocked, unload included; the file-load path still works.
    file_load = args.file_load or (lockdown_mode(sysroot) is not None and arch.nr_kexec_file_load >= 0)
    current_layer(arch).unload(panic=args.panic, file_load=file_load)
    print(f"kexecfw: {'crash kernel' if args.panic else 'kernel'} unloaded", file=sys.stderr)
    return 0
