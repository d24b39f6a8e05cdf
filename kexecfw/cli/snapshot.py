"""``kexecfw snapshot DIR``: copy this system's /proc and /sys files into a sysroot for tests and bug reports."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", metavar="DIR", help="new directory for the snapshot")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from kexecfw.cli.common import sysroot_of
    from kexecfw.snapshot import take_snapshot

    report = take_snapshot(sysroot_of(args), Path(args.dest))
    print(f"snapshot in {args.dest}: {len(report.copied)} files"
          + (f", {len(report.missing)} absent on this system" if report.missing else ""))
    for w in report.warnings:
        print(f"kexecfw: warning: {w}", file=sys.stderr)
    return 0
