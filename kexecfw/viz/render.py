"""Figures of a memory map and of a load plan over it. Each function returns a Figure (headless-safe)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from kexecfw.memory.model import MemoryMap, RegionKind
from kexecfw.viz.scale import AddressScale
from kexecfw.viz.scale import size_text as _size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kexecfw.segments.plan import Plan

COLOURS = {
    RegionKind.RAM: "#9ecae1", RegionKind.RESERVED: "#bdbdbd", RegionKind.ACPI: "#fdd0a2",
    RegionKind.NVS: "#fdae6b", RegionKind.PMEM: "#c7e9c0", RegionKind.CRASH: "#de2d26",
    RegionKind.CRASH_LOW: "#fb6a4a", RegionKind.KERNEL_CODE: "#3182bd", RegionKind.KERNEL_RODATA: "#6baed6",
    RegionKind.KERNEL_DATA: "#08519c", RegionKind.KERNEL_BSS: "#4292c6", RegionKind.OTHER: "#f0f0f0",
}
SEGMENT_COLOURS = ["#31a354", "#756bb1", "#e6550d", "#636363", "#d6616b", "#8c6d31", "#7b4173"]




def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def draw_memmap(memmap: MemoryMap, *, plan: "Plan | None" = None, title: str = "",
                window: tuple[int, int] | None = None) -> "Figure":
    """The physical memory map in rows (firmware view, kernel and crash regions, planned segments).

    The address axis is broken and size-aware (:class:`AddressScale`): each row is readable whatever the
    ratio of region sizes. ``window`` zooms into ``[start, end)``.
    """
    fig = _figure(13, 1.3 + 0.9 * (3 if plan and plan.segments else 2))
    _draw_on(fig.add_subplot(), memmap, plan=plan, title=title, window=window)
    return fig


def draw_memmaps(maps: list[tuple[str, MemoryMap]]) -> "Figure":
    """Several memory maps one above the other (e.g. arm64 and x86_64 side by side)."""
    fig = _figure(13, 2.4 * max(len(maps), 1))
    for i, (title, memmap) in enumerate(maps):
        _draw_on(fig.add_subplot(len(maps), 1, i + 1), memmap, plan=None, title=title, window=None)
    return fig


def _draw_on(ax: "object", memmap: MemoryMap, *, plan: "Plan | None", title: str,
             window: tuple[int, int] | None) -> None:
    regions = [r for r in memmap.regions if r.kind is not RegionKind.OTHER or r.depth == 0]
    if window:
        regions = [r for r in regions if r.end > window[0] and r.start < window[1]]
    top = [r for r in regions if r.depth == 0 and r.kind is not RegionKind.OTHER]
    nested = [r for r in regions if r.depth > 0]
    segments = list(plan.segments) if plan else []
    bounds = [b for r in top + nested for b in (r.start, r.end)] + [b for s in segments for b in (s.mem, s.mem + s.memsz)]
    if window:
        bounds = [min(max(b, window[0]), window[1]) for b in bounds] + list(window)
    scale = AddressScale(bounds, [(r.start, r.end) for r in top] + [(s.mem, s.mem + s.memsz) for s in segments])
    rows = ["firmware / System RAM", "kernel, crash region"] + (["planned segments"] if segments else [])
    y = {name: len(rows) - 1 - i for i, name in enumerate(rows)}
    seen: set[str] = set()

    def bar(row: str, start: int, end: int, colour: str, label: str, legend: str | None) -> None:
        x0, x1 = scale(start), scale(end)
        ax.barh(y[row], max(x1 - x0, 0.05), left=x0, height=0.7, color=colour, edgecolor="black", linewidth=0.4,
                label=legend if legend and legend not in seen else None)
        if legend:
            seen.add(legend)
        if label and x1 - x0 >= 2.2:
            ax.text((x0 + x1) / 2, y[row], label, ha="center", va="center", fontsize=7, clip_on=True)
        elif label and x1 - x0 >= 0.95:   # narrow (a page-sized segment): upright text fits, level text overlaps
            ax.text((x0 + x1) / 2, y[row], label, ha="center", va="center", fontsize=6, rotation=90,
                    clip_on=True)

    for r in top:
        bar(rows[0], r.start, r.end, COLOURS[r.kind], _size(r.size) if r.kind is RegionKind.RAM else "", r.kind.value)
    for r in nested:
        if r.kind in (RegionKind.RESERVED, RegionKind.ACPI, RegionKind.NVS):
            bar(rows[0], r.start, r.end, COLOURS[r.kind], "", r.kind.value)
        else:
            bar(rows[1], r.start, r.end, COLOURS[r.kind],
                f"crash {_size(r.size)}" if r.kind in (RegionKind.CRASH, RegionKind.CRASH_LOW) else "", r.kind.value)
    for i, s in enumerate(sorted(segments, key=lambda s: s.mem)):
        bar(rows[2], s.mem, s.mem + s.memsz, SEGMENT_COLOURS[i % len(SEGMENT_COLOURS)],
            f"{s.name}\n{_size(s.memsz)}", None)
    ticks = sorted({r.start for r in top} | {b for r in nested if r.kind in (RegionKind.CRASH, RegionKind.CRASH_LOW)
                                              for b in (r.start, r.end)}
                   | {r.start for r in nested if r.kind is RegionKind.KERNEL_CODE}
                   | {s.mem for s in segments} | ({max(r.end for r in top)} if top else set()))
    if window:
        ticks = [t for t in ticks if window[0] <= t <= window[1]]
    set_address_ticks(ax, scale, ticks)
    ax.set_yticks(list(y.values()), list(y.keys()), fontsize=8)
    ax.set_xlim(0, scale.width)
    ax.set_xlabel("physical address (broken axis: width grows with log of size)")
    ax.set_title(title or f"memory map ({memmap.source})", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


def set_address_ticks(ax: "object", scale: AddressScale, addrs: "list[int] | set[int]") -> None:
    """Hex address ticks (with the address in MiB/GiB) on a broken axis, dropping ticks that would overlap."""
    kept: list[int] = []
    for t in sorted(set(addrs)):
        if not kept or scale(t) - scale(kept[-1]) > scale.width * 0.045:
            kept.append(t)
    labels = [f"{t:#x}" + (f" ({_address_size(t)})" if t and t % (1 << 20) == 0 else "") for t in kept]
    ax.set_xticks([scale(t) for t in kept], labels, rotation=35, ha="right", fontsize=7)


def _address_size(addr: int) -> str:
    """An address as an exact MiB count below 16 GiB (1026 MiB, not a rounded 1 GiB), else in GiB."""
    return f"{addr >> 20} MiB" if addr < 16 << 30 else f"{addr / (1 << 30):.4g} GiB"


def save_figure(fig: "Figure", path: str) -> None:
    """Write ``fig`` as an image (format from the suffix); a bad path is one clear error."""
    from kexecfw.errors import BadInputError
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise BadInputError(f"cannot write the plot to {path}: {e.strerror or e}") from None
    except ValueError as e:   # unknown image format suffix
        raise BadInputError(f"cannot write the plot to {path}: {e}") from None


def save_plot(fig: "Figure", path: str, what: str) -> None:
    """A command's ``--plot PATH``: write ``fig`` and say where on stderr (stdout may be a --json document)."""
    import os
    import sys
    save_figure(fig, path)
    print(f"kexecfw: wrote {what} to {os.path.abspath(path)}", file=sys.stderr)


def save_memmap_plot(memmap: MemoryMap, path: str, title: str = "") -> None:
    save_plot(draw_memmap(memmap, title=title), path, "the memory map")


def save_plan_plot(plan: "Plan", memmap: MemoryMap | None, path: str) -> None:
    if memmap is None:
        memmap = MemoryMap([], "plan only")
    window = None
    if plan.crash_region is not None:
        pad = plan.crash_region.size // 8
        window = (max(plan.crash_region.start - pad, 0), plan.crash_region.end + pad)
    save_plot(draw_memmap(memmap, plan=plan, window=window,
                          title=f"{plan.arch} {plan.mode} load plan ({len(plan.segments)} segments)"),
              path, "the load plan")
