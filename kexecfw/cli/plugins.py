"""``kexecfw plugins``: each plugin, the architectures it serves and the hooks it implements."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from kexecfw.cli.common import print_json
    from kexecfw.pluginmanager import describe_plugins

    plugins = describe_plugins()
    if args.json:
        print_json({"schema": 1, "plugins": plugins})
        return 0
    for p in plugins:
        archs = ", ".join(p["architectures"]) or "-"
        print(f"{p['name']} ({p['module']}): architectures {archs}")
        for hook in p["hooks"]:
            print(f"    {hook}")
    return 0
