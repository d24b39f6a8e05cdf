"""ipywidgets wrappers over the figures: pick a snapshot or the live system, an architecture, a window."""
from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets

from kexecfw.load import discover_memory
from kexecfw.snapshot import find_snapshots
from kexecfw.sysroot import Sysroot
from kexecfw.viz.render import draw_memmap

LIVE = "this machine (live /)"


def memmap_explorer(snapshots: dict[str, Path] | None = None) -> widgets.interactive:
    """Choose a sysroot and zoom into an address window; ``.result`` is the current Figure."""
    sources = {LIVE: Path("/"), **(snapshots if snapshots is not None else find_snapshots())}
    source = widgets.Dropdown(options=list(sources), description="sysroot")
    arch = widgets.Dropdown(options=["auto", "arm64", "x86_64"], description="arch")
    window = widgets.SelectionRangeSlider(options=["0x0"], description="window", layout={"width": "90%"})

    def boundaries(label: str, arch_name: str) -> list[str]:
        _, memmap = discover_memory(Sysroot(sources[label]), arch=None if arch_name == "auto" else arch_name)
        points = sorted({r.start for r in memmap.regions if r.depth <= 1} | {r.end for r in memmap.regions})
        return [f"{p:#x}" for p in points]

    def refresh_window(*_: object) -> None:
        opts = boundaries(source.value, arch.value)
        window.options = opts
        window.index = (0, len(opts) - 1)

    source.observe(refresh_window, names="value")
    arch.observe(refresh_window, names="value")
    refresh_window()

    def show(label: str, arch_name: str, bounds: tuple[str, str]):
        spec, memmap = discover_memory(Sysroot(sources[label]), arch=None if arch_name == "auto" else arch_name)
        lo, hi = (int(b, 16) for b in bounds)
        return draw_memmap(memmap, title=f"{spec.name}: {label}", window=(lo, hi) if hi > lo else None)

    return widgets.interactive(show, label=source, arch_name=arch, bounds=window)
