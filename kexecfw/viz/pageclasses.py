"""Pages of a crashed kernel by makedumpfile class, and what each dump level (-d) keeps.

A ``-d 31`` kdump keeps mem_map (struct pages are kernel data), so kexecfw's classifier
(:class:`kexecfw.vmcore.classify.Classifier`) can read every RAM page's class from it: free (16),
cache (2), cache private (4), user (8). Zero pages (1) are not in mem_map: they are the pages the
dump excluded that no other class claims (RAM pages, from the PT_LOADs of /proc/vmcore, minus the
pages dumped, minus the classified ones). Each page counts in one class, in the classifier's
order (free, cache, cache private, user, zero), so a level without 16 is estimated to keep free
pages that are also zero: an upper bound for that level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kexecfw.errors import BadInputError
from kexecfw.viz.scale import size_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CLASS_BITS = {"zero": 1, "cache": 2, "cache_private": 4, "user": 8, "free": 16}
CLASS_LABELS = {"zero": "zero (1)", "cache": "cache (2)", "cache_private": "cache private (4)",
                "user": "user (8)", "free": "free (16)"}
CLASS_COLOURS = {"zero": "#bdbdbd", "cache": "#6baed6", "cache_private": "#9e9ac8", "user": "#fd8d3c",
                 "free": "#74c476", "kept": "#3182bd"}     # kept: the blue of the dump files' panel
LEVELS = (0, 1, 2, 8, 16, 17, 19, 23, 31)


@dataclass
class PageClasses:
    page_size: int
    ram_pages: int                 # pages of System RAM the dump describes
    counts: dict[str, int]         # pages per class (CLASS_BITS keys)
    dumped_pages: int              # pages the dump holds
    dump_level: int | None

    def kept(self, level: int) -> int:
        """Pages a dump at ``level`` keeps."""
        return self.ram_pages - sum(n for name, n in self.counts.items() if level & CLASS_BITS[name])

    def other(self) -> int:
        """Pages in no excludable class (kernel code and data, page tables, slab ...)."""
        return self.ram_pages - sum(self.counts.values())


def _pfn_runs(ranges: list[tuple[int, int]], page_size: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        a, b = lo // page_size, -(-hi // page_size)
        if runs and a <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], b))
        elif b > a:
            runs.append((a, b))
    return runs


def count_page_classes(dump_path: str, ram_ranges: list[tuple[int, int]]) -> PageClasses:
    """Classify the RAM pages (``ram_ranges``: physical [start, end) pairs) of a kdump file with mem_map.

    ``ram_ranges`` are the PT_LOADs of the crashed kernel's /proc/vmcore (``LabResult.vmcore_headers()``);
    overlapping ones (the kernel text) are merged.
    """
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.classify import Classifier
    from kexecfw.vmcore.kmem import KernelMemory
    with open_dump(dump_path) as dump:
        if not hasattr(dump, "dumped_pages"):
            raise BadInputError(f"{dump_path} is {dump.format}: page classes need a kdump-compressed dump "
                                "(kexecfw vmcore save -d 31 or makedumpfile -d 31)")
        runs = _pfn_runs(ram_ranges, dump.page_size)
        classifier = Classifier(KernelMemory(dump), 31)
        excluded = sum(n for _, n in classifier.excluded(runs))
        stats = classifier.stats
        level = dump.dump_level
        ram_pages = sum(b - a for a, b in runs)
        dumped = dump.dumped_pages
        page_size = dump.page_size
    if stats["no_mem_map"]:
        raise BadInputError(f"{dump_path} lacks the struct pages of {stats['no_mem_map']} pages: "
                            "its mem_map was filtered out, so their class is unknown")
    counts = {name: stats[name] for name in ("cache", "cache_private", "user", "free")}
    # excluded by the dump but in no mem_map class: the zero pages (only when the dump dropped them)
    counts["zero"] = max(ram_pages - dumped - excluded, 0) if level is None or level & 1 else 0
    return PageClasses(page_size, ram_pages, counts, dumped, level)


def draw_page_classes(pages: PageClasses, measured: dict[str, int] | None = None,
                      levels: tuple[int, ...] = LEVELS, title: str = "") -> "Figure":
    """Pages per class, the dump size each -d level would keep, and measured dump files if given.

    ``measured``: label -> file size in bytes (e.g. /proc/vmcore, the -d 31 dumps), drawn as a third panel.
    """
    from matplotlib.figure import Figure
    panels = 3 if measured else 2
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, panels, width_ratios=[1, 1.3, 1][:panels])
    mib = (1 << 20) / pages.page_size            # pages per MiB

    names = ["other"] + list(CLASS_BITS)
    values = [pages.other()] + [pages.counts[n] for n in CLASS_BITS]
    labels = ["not excludable"] + [CLASS_LABELS[n] for n in CLASS_BITS]
    colours = ["#525252"] + [CLASS_COLOURS[n] for n in CLASS_BITS]
    ax = axes[0]
    bars = ax.barh(range(len(names)), [v / mib for v in values], color=colours, edgecolor="black", linewidth=0.4)
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.invert_yaxis()
    for b, v in zip(bars, values):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:,} pages", va="center", fontsize=7)
    ax.set_xlim(0, max(values) / mib * 1.45)
    ax.set_xlabel("MiB")
    ax.set_title(f"RAM pages by class ({pages.ram_pages:,} pages, {size_text(pages.ram_pages * pages.page_size)})",
                 fontsize=9)

    ax = axes[1]
    ticks = [f"-d {lv}" for lv in levels]
    kept = [pages.kept(lv) for lv in levels]
    bars = ax.bar(ticks, [k / mib for k in kept], color=CLASS_COLOURS["kept"], edgecolor="black", linewidth=0.4,
                  label="kept")
    # above each kept bar, what that level leaves out, in the class colours of the first panel
    bottom = [k / mib for k in kept]
    for name in CLASS_BITS:
        heights = [pages.counts[name] / mib if lv & CLASS_BITS[name] else 0 for lv in levels]
        ax.bar(ticks, heights, bottom=bottom, color=CLASS_COLOURS[name], edgecolor="black", linewidth=0.3,
               alpha=0.55, hatch="//", label=f"left out: {CLASS_LABELS[name]}" if any(heights) else None)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for b, k in zip(bars, kept):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{k / mib:.0f}", ha="center",
                va="bottom", fontsize=7, fontweight="bold")
    ax.set_ylim(0, pages.ram_pages / mib * 1.42)    # room for the legend above the bars
    ax.set_ylabel("MiB of RAM (uncompressed)")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("kept (blue) and left out (hatched) at each dump level", fontsize=9)
    ax.legend(fontsize=6, loc="upper right", frameon=True, framealpha=0.9, ncols=2)
    # -d is a bitmask, not a scale: say so where the bars go up and down
    ax.set_xlabel("-d N leaves out every class whose bit is in N (1 zero, 2 cache, 4 cache private, 8 user, "
                  "16 free):\na bitmask, not a scale - -d 8 (user pages only) keeps more than -d 2 (cache)",
                  fontsize=7)

    if measured:
        ax = axes[2]
        names = list(measured)
        sizes = [measured[n] / (1 << 20) for n in names]
        bars = ax.barh(range(len(names)), sizes, color=CLASS_COLOURS["kept"], edgecolor="black", linewidth=0.4)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        for b, n in zip(bars, names):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {size_text(measured[n])}", va="center",
                    fontsize=7)
        ax.set_xlim(0, max(sizes) * 1.4)
        ax.set_xlabel("MiB")
        ax.set_title("dump files (measured)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
