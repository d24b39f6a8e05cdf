"""``kexecfw memmap``: the memory map kexec plans against, crash regions marked."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="also show device (non-memory) resources")
    p.add_argument("--plot", metavar="PNG", help="draw the memory map into PNG")


def run(args: argparse.Namespace) -> int:
    from kexecfw.cli.common import human_size, print_json, sysroot_of
    from kexecfw.load import discover_memory

    sysroot = sysroot_of(args)
    arch, memmap = discover_memory(sysroot, arch=args.arch)
    if args.plot:
        from kexecfw.viz.render import save_memmap_plot
        save_memmap_plot(memmap, args.plot, title=f"{arch.name} memory map ({sysroot.root})")
    if args.json:
        doc = {"schema": 1, "arch": arch.name, **memmap.to_json()}
        print_json(doc)
        return 0
    print(f"{arch.name} memory map from {memmap.source}")
    for r in memmap.regions:
        if r.kind.name == "OTHER" and not args.all:
            continue
        mark = "  <== crash kernel" if r.kind.name.startswith("CRASH") else ""
        print(f"{'  ' * r.depth}{r.start:#014x}-{r.range.last:#014x} : {r.name} ({human_size(r.size)}){mark}")
    print(f"System RAM {human_size(memmap.ram_size)}; crash regions: "
          + (", ".join(f"{c.start:#x}-{c.last:#x} ({human_size(c.size)})" for c in memmap.crash_regions) or "none"))
    return 0
