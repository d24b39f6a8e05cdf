"""Figures of a memory map and of a load plan over it. Each function returns a Figure (headless-safe)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from kexecfw.memory.model import MemoryMap, RegionKind
from kexecfw.viz.scale import AddressScale
from kexecfw.viz.scale import size_text as _size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kexecfw.segments.plan import Plan


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def draw_memmap(memmap: MemoryMap, *, plan: "Plan | None" = None, title: str = "",
                window: tuple[int, int] | None = None) -> "Figure":
    """The physical memory map in rows (firmware view, kernel and crash regions, planned segments).

    The address axis is broken and size-aware (:class:`AddressScale`): each row is readable whatever the
    ratio of region sizes. ``window`` zooms into ``[start, end)``. Colours: :mod:`kexecfw.viz.palette`.
    """
    fig = _figure(13, 1.5 + 0.9 * (3 if plan and plan.segments else 2))
    ax = fig.add_subplot()
    _draw_on(ax, memmap, plan=plan, title=title, window=window)
    legend(ax, [ax])
    return fig


def draw_memmaps(maps: list[tuple[str, MemoryMap]]) -> "Figure":
    """Several memory maps one above the other (e.g. arm64 and x86_64), with one legend for all."""
    fig = _figure(13, 2.6 * max(len(maps), 1))
    axes = [fig.add_subplot(len(maps), 1, i + 1) for i in range(len(maps))]
    for ax, (title, memmap) in zip(axes, maps):
        _draw_on(ax, memmap, plan=None, title=title, window=None)
    if axes:
        legend(axes[0], axes)
    return fig


def legend(ax: "object", axes: list) -> None:
    """One legend beside ``ax`` for the kinds drawn on all ``axes``, each kind once."""
    from kexecfw.viz.palette import legend_rank
    unique: dict[str, object] = {}
    for a in axes:
        for handle, label in zip(*a.get_legend_handles_labels()):
            unique.setdefault(label, handle)
    unique = dict(sorted(unique.items(), key=lambda item: legend_rank(item[0])))
    ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
              frameon=False)


def _draw_on(ax: "object", memmap: MemoryMap, *, plan: "Plan | None", title: str,
             window: tuple[int, int] | None) -> None:
    from kexecfw.viz.bars import Box, Row
    from kexecfw.viz.palette import KERNEL_PART_LABELS, REGION_NAMES, region_colour, segment_colour
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
    names = ["firmware / System RAM", "kernel, crash region"] + (["planned segments"] if segments else [])
    rows = {name: Row(ax, scale, len(names) - 1 - i) for i, name in enumerate(names)}

    def add(row: str, start: int, end: int, kind: RegionKind, label: str = "") -> None:
        rows[row].add(Box(start, end, region_colour(kind), label, REGION_NAMES[kind]))

    for r in top:
        add(names[0], r.start, r.end, r.kind, _size(r.size) if r.kind is RegionKind.RAM else "")
    for r in nested:
        if r.kind in (RegionKind.RESERVED, RegionKind.ACPI, RegionKind.NVS):
            add(names[0], r.start, r.end, r.kind)
        elif r.kind in (RegionKind.CRASH, RegionKind.CRASH_LOW):
            add(names[1], r.start, r.end, r.kind, f"crash {_size(r.size)}")
        else:
            part = KERNEL_PART_LABELS.get(r.kind)
            add(names[1], r.start, r.end, r.kind, f"{part}\n{_size(r.size)}" if part else "")
    for s in sorted(segments, key=lambda s: s.mem):
        rows[names[2]].add(Box(s.mem, s.mem + s.memsz, segment_colour(s.name), f"{s.name}\n{_size(s.memsz)}",
                               f"segment: {s.name}"))
    seen: set[str] = set()
    for row in rows.values():
        row.draw(seen)
    crash_edges = {b for r in nested if r.kind in (RegionKind.CRASH, RegionKind.CRASH_LOW) for b in (r.start, r.end)}
    ticks = ({r.start for r in top} | crash_edges | {r.start for r in nested if r.kind is RegionKind.KERNEL_CODE}
             | {s.mem for s in segments} | ({max(r.end for r in top)} if top else set()))
    if window:
        ticks = {t for t in ticks if window[0] <= t <= window[1]}
    set_address_ticks(ax, scale, ticks, first=crash_edges | {s.mem for s in segments})
    ax.set_yticks([row.y for row in rows.values()], list(rows), fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(0, scale.width)
    ax.set_xlabel("physical address (broken axis: width grows with log of size)", fontsize=8)
    ax.set_title(title or f"memory map ({memmap.source})", fontsize=10)


TICK_CHAR_EM = 0.62        # tick labels' glyph width in ems (DejaVu Sans, hex digits)


def set_address_ticks(ax: "object", scale: AddressScale, addrs: "list[int] | set[int]",
                      first: "set[int] | None" = None, fontsize: float = 7) -> None:
    """Hex address ticks with the address in MiB/GiB below, level, none overlapping another: the
    ``first`` addresses (crash region edges, segments) are placed first, the others where they fit."""
    fig = ax.figure
    inches = max(fig.get_figwidth() * max(ax.get_position().width, 0.8), 1.0)
    per_char = scale.width / inches * fontsize * TICK_CHAR_EM / 72

    def label(t: int) -> str:
        return f"{t:#x}" + (f"\n{_address_size(t)}" if t and t % (1 << 20) == 0 else "")

    def half(t: int) -> float:
        return max(len(line) for line in label(t).split("\n")) * per_char / 2 + per_char

    kept: list[int] = []
    order = sorted(set(addrs), key=lambda t: (t not in (first or set()), t))
    for t in order:
        x = scale(t)
        if all(abs(x - scale(k)) >= half(t) + half(k) for k in kept):
            kept.append(t)
    kept.sort()
    ax.set_xticks([scale(t) for t in kept], [label(t) for t in kept], fontsize=fontsize)


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
