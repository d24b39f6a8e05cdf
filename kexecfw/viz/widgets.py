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


def plan_stepper(snapshots: dict[str, Path] | None = None, kernel: str = "", initrd: str = "",
                 cmdline: str = "", panic: bool = True) -> widgets.VBox:
    """Plan a load (no syscall) and step through the hook calls: each one's plugins, result and holes.

    Pick a sysroot (a snapshot, or this machine), the architecture, the kernel and initrd files;
    "plan" runs :func:`kexecfw.viz.planview.record_plan`; the slider walks its hook calls.
    """
    from kexecfw.model import LoadOptions
    from kexecfw.viz.planview import format_holes, record_plan

    sources = {**(snapshots if snapshots is not None else find_snapshots()), LIVE: Path("/")}
    source = widgets.Dropdown(options=list(sources), description="sysroot")
    arch = widgets.Dropdown(options=["auto", "arm64", "x86_64"], description="arch")
    kernel_w = widgets.Text(value=str(kernel), description="kernel", layout={"width": "90%"})
    initrd_w = widgets.Text(value=str(initrd), description="initrd", layout={"width": "90%"})
    cmdline_w = widgets.Text(value=cmdline, description="cmdline", layout={"width": "90%"})
    panic_w = widgets.Checkbox(value=panic, description="panic load (-p)")
    go = widgets.Button(description="plan", button_style="primary")
    step = widgets.IntSlider(min=0, max=0, description="hook call", disabled=True)
    out = widgets.Output()
    state: dict = {"recording": None}

    def show(*_: object) -> None:
        rec = state["recording"]
        out.clear_output()
        with out:
            if rec is None:
                return
            if rec.error is not None:
                print(f"planning stopped: {rec.error}")
            if not rec.steps:
                return
            s = rec.steps[step.value]
            print(f"{step.value + 1}/{len(rec.steps)}  {s.hook}")
            print(f"  plugins (call order): {', '.join(s.implementers) or 'none'}")
            print(f"  result: {s.summary().split('-> ', 1)[1]}")
            if s.free_before is not None:
                print(f"  holes before: {format_holes(s.free_before)}")
                for seg in s.placed:
                    print(f"  placed {seg.name} at {seg.mem:#x}-{seg.mem + seg.memsz - 1:#x} ({seg.memsz:#x} bytes)")

    def plan(*_: object) -> None:
        try:
            options = LoadOptions(kernel=Path(kernel_w.value), initrd=Path(initrd_w.value) if initrd_w.value else None,
                                  cmdline=cmdline_w.value, panic=panic_w.value)
        except (TypeError, ValueError) as e:
            out.clear_output()
            with out:
                print(f"bad options: {e}")
            return
        rec = record_plan(options, Sysroot(sources[source.value]), None if arch.value == "auto" else arch.value)
        state["recording"] = rec
        step.max = max(len(rec.steps) - 1, 0)
        step.disabled = not rec.steps
        step.value = 0
        show()

    go.on_click(plan)
    step.observe(show, names="value")
    if kernel:
        plan()
    return widgets.VBox([widgets.HBox([source, arch, panic_w]), kernel_w, initrd_w, cmdline_w, go, step, out])
