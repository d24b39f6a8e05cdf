"""ipywidgets wrappers over the figures: pick a snapshot or the live system, an architecture, a window."""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets

from kexecfw.load import discover_memory
from kexecfw.snapshot import find_snapshots
from kexecfw.sysroot import Sysroot
from kexecfw.viz.render import draw_memmap

LIVE = "this machine (live /)"


def figure_png(fig: "object") -> bytes:
    """A Figure as PNG bytes (what an Image widget shows)."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


class MemmapExplorer(widgets.VBox):
    """The memory map explorer: a sysroot, an architecture, an address window, and the figure.

    The figure is an Image widget whose PNG is the widget's state: it shows in any front end as soon
    as the view exists (an Output widget's captured output is lost when the kernel writes it before
    JupyterLab has made the view, which is what happened to the first figure). ``.result`` is the
    current Figure.
    """

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources
        self.source = widgets.Dropdown(options=list(sources), description="sysroot")
        self.arch = widgets.Dropdown(options=["auto", "arm64", "x86_64"], description="arch")
        self.window = widgets.SelectionRangeSlider(options=["0x0"], description="window", layout={"width": "90%"})
        self.image = widgets.Image(format="png", layout={"width": "100%"})
        self.status = widgets.HTML()
        self.result = None
        super().__init__([self.source, self.arch, self.window, self.image, self.status])
        self._set_window()
        self.source.observe(self._refresh_window, names="value")
        self.arch.observe(self._refresh_window, names="value")
        self.window.observe(self._draw, names="value")
        self._draw()

    def _memmap(self):
        arch = None if self.arch.value == "auto" else self.arch.value
        return discover_memory(Sysroot(self.sources[self.source.value]), arch=arch)

    def _set_window(self) -> None:
        """The window slider's stops: every region boundary of the chosen map; the whole map selected."""
        _, memmap = self._memmap()
        points = sorted({r.start for r in memmap.regions if r.depth <= 1} | {r.end for r in memmap.regions})
        with self.hold_sync():
            self.window.options = [f"{p:#x}" for p in points]
            self.window.index = (0, len(points) - 1)

    def _refresh_window(self, *_: object) -> None:
        before = self.window.value
        self._set_window()
        if self.window.value == before:       # else the window's observer has drawn it
            self._draw()

    def _draw(self, *_: object) -> None:
        from kexecfw.errors import KexecfwError
        try:
            spec, memmap = self._memmap()
        except KexecfwError as e:
            self.status.value = f"<pre>{html.escape(e.message)}</pre>"
            return
        lo, hi = (int(b, 16) for b in self.window.value)
        self.result = draw_memmap(memmap, title=f"{spec.name}: {self.source.value}",
                                  window=(lo, hi) if hi > lo else None)
        self.image.value = figure_png(self.result)
        self.status.value = ""


def memmap_explorer(snapshots: dict[str, Path] | None = None) -> MemmapExplorer:
    """Choose a sysroot and zoom into an address window; ``.result`` is the current Figure."""
    return MemmapExplorer({LIVE: Path("/"), **(snapshots if snapshots is not None else find_snapshots())})


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
    # an HTML widget, not an Output: its text is widget state, shown by any front end (see MemmapExplorer)
    out = widgets.HTML()
    state: dict = {"recording": None}

    def say(lines: list[str]) -> None:
        out.value = f"<pre>{html.escape(chr(10).join(lines))}</pre>" if lines else ""

    def show(*_: object) -> None:
        rec = state["recording"]
        lines: list[str] = []
        if rec is not None:
            if rec.error is not None:
                lines.append(f"planning stopped: {rec.error}")
            if rec.steps:
                s = rec.steps[step.value]
                lines.append(f"{step.value + 1}/{len(rec.steps)}  {s.hook}")
                lines.append(f"  plugins (call order): {', '.join(s.implementers) or 'none'}")
                lines.append(f"  result: {s.summary().split('-> ', 1)[1]}")
                if s.free_before is not None:
                    lines.append(f"  holes before: {format_holes(s.free_before)}")
                    lines += [f"  placed {seg.name} at {seg.mem:#x}-{seg.mem + seg.memsz - 1:#x} ({seg.memsz:#x} bytes)"
                              for seg in s.placed]
        say(lines)

    def plan(*_: object) -> None:
        try:
            options = LoadOptions(kernel=Path(kernel_w.value), initrd=Path(initrd_w.value) if initrd_w.value else None,
                                  cmdline=cmdline_w.value, panic=panic_w.value)
        except (TypeError, ValueError) as e:
            say([f"bad options: {e}"])
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
