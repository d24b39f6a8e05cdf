"""``kexecfw memmap``: the memory map kexec plans against, crash regions marked."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true",
                   help="show the whole /proc/iomem resource tree (PCI buses and devices, IOAPIC, ...), "
                        "not only memory")
    p.add_argument("--plot", metavar="PNG", help="draw the memory map into PNG (the path is printed on stderr)")


def run(args: argparse.Namespace) -> int:
    from kexecfw.cli.common import human_size, print_json, sysroot_of
    from kexecfw.load import discover_memory

    sysroot = sysroot_of(args)
    arch, memmap = discover_memory(sysroot, arch=args.arch)
    tree = None
    if args.all:
        from kexecfw.memory.iomem import read_iomem
        tree = read_iomem(sysroot)
    if args.plot:
        from kexecfw.viz.render import save_memmap_plot
        save_memmap_plot(memmap, args.plot, title=f"{arch.name} memory map ({sysroot.root})")
    if args.json:
        doc = {"schema": 1, "arch": arch.name, **memmap.to_json()}
        if tree is not None:
            doc["resources"] = tree.to_json()
        print_json(doc)
        return 0
    shown = tree or memmap
    print(f"{arch.name} {'resource tree' if tree else 'memory map'} from {shown.source}")
    for r in shown.regions:
        if tree is None and r.kind.name == "OTHER":     # devices: --all shows them
            continue
        mark = "  <== crash kernel" if r.kind.name.startswith("CRASH") else ""
        print(f"{'  ' * r.depth}{r.start:#014x}-{r.range.last:#014x} : {r.name} ({human_size(r.size)}){mark}")
    print(f"System RAM {human_size(memmap.ram_size)}; crash regions: "
          + (", ".join(f"{c.start:#x}-{c.last:#x} ({human_size(c.size)})" for c in memmap.crash_regions) or "none"))
    return 0
