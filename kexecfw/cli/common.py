"""Helpers shared by the CLI commands: sysroot and hooks from the global options, output formatting."""
from __future__ import annotations

import os
import sys

from kexecfw.errors import KexecfwError, PermissionDeniedError

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: see kexecfw.cli's start-up note
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from kexecfw.sysroot import Sysroot


def sysroot_of(args: argparse.Namespace) -> "Sysroot":
    from kexecfw.sysroot import Sysroot
    return Sysroot(args.sysroot)


def require_live_root(sysroot: "Sysroot", action: str) -> None:
    """Real kexec actions only on the live system, as root."""
    if not sysroot.is_live:
        raise KexecfwError(f"refusing to {action} with --sysroot {sysroot.root}: a snapshot is never loaded "
                           "into the running kernel (use --dry-run to plan on it)")
    if os.geteuid() != 0:
        raise PermissionDeniedError(f"{action} needs root (CAP_SYS_BOOT); run it as root"
                                    + (" or use --dry-run" if action.startswith("load") else ""))


def print_json(doc: dict[str, Any]) -> None:
    import json  # here: commands without --json do not import it
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def human_size(n: int) -> str:
    """``n`` bytes in the largest binary unit it reaches, to a tenth (whole when exact). Integer
    arithmetic: a size read from a file may be any integer, far past what a float holds."""
    for unit, shift in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            if not n % (1 << shift):
                return f"{n >> shift} {unit}"
            whole, tenth = divmod((n * 10 + (1 << (shift - 1))) >> shift, 10)
            return f"{whole}.{tenth} {unit}"
    return f"{n} B"

