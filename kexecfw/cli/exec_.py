"""``kexecfw exec``: like ``kexec -e``: sync, then reboot into the loaded kernel."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-sync", action="store_true", help="do not sync filesystems first")


def run(args: argparse.Namespace) -> int:
    import os

    from kexecfw.cli.common import require_live_root, sysroot_of
    from kexecfw.errors import KexecfwError
    from kexecfw.load import resolve_arch
    from kexecfw.pluginmanager import Hooks
    from kexecfw.syscalls import current_layer

    sysroot = sysroot_of(args)
    require_live_root(sysroot, "exec a kernel")
    if sysroot.kexec_state().get("kexec_loaded") != 1:
        raise KexecfwError("no kernel is loaded for kexec; load one first (kexecfw load KERNEL)")
    arch = resolve_arch(Hooks(), sysroot, args.arch)
    if not args.no_sync:
        os.sync()
    current_layer(arch).reboot_kexec()
    return 0  # reached only when a test's syscall layer stands in for the kernel
