"""Rows of boxes on an address axis, each labelled where its label fits.

A label is written inside its box when it fits there; otherwise beside it (right, then left) when the
row has room, else above or below the row, joined to its box by a thin leader line. Widths are
estimated from the font size and the axes' size, so "424 B" on a 4 KiB note is never written over
its neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kexecfw.viz.palette import text_colour

if TYPE_CHECKING:
    from kexecfw.viz.scale import AddressScale

BAR_HEIGHT = 0.56          # of the 1.0 between rows: the rest holds labels placed above or below
MIN_WIDTH = 0.06           # the narrowest box drawn (a page on a 1 TiB axis is still a mark)
CHAR_EM = 0.6              # average glyph width of DejaVu Sans, in ems
PAD = 0.12                 # between a box and a label beside it (axis units)


@dataclass
class Box:
    start: int
    end: int
    colour: str
    label: str = ""
    legend: str | None = None
    hatch: str | None = None


class Row:
    """The boxes of one row (``y``) of ``ax``, drawn through ``scale``; :meth:`draw` places labels."""

    def __init__(self, ax: object, scale: "AddressScale", y: float, fontsize: float = 7) -> None:
        self.ax, self.scale, self.y, self.fontsize = ax, scale, y, fontsize
        self.boxes: list[Box] = []

    def add(self, box: Box) -> None:
        self.boxes.append(box)

    def _units_per_char(self) -> float:
        fig = self.ax.figure
        bbox = self.ax.get_position()
        axes_inches = max(fig.get_figwidth() * max(bbox.width, 0.8), 1.0)   # before layout: the default width
        return self.scale.width / axes_inches * self.fontsize * CHAR_EM / 72

    def text_width(self, text: str) -> float:
        return max(len(line) for line in text.split("\n")) * self._units_per_char()

    def draw(self, seen_legends: set[str]) -> None:
        ax, y = self.ax, self.y
        spans = []
        for b in self.boxes:
            x0, x1 = self.scale(b.start), self.scale(b.end)
            w = max(x1 - x0, MIN_WIDTH)
            legend = b.legend if b.legend and b.legend not in seen_legends else None
            if b.legend:
                seen_legends.add(b.legend)
            ax.barh(y, w, left=x0, height=BAR_HEIGHT, color=b.colour, edgecolor="black", linewidth=0.4,
                    hatch=b.hatch, label=legend)
            spans.append((x0, x0 + w))
        taken = list(spans)                       # where a label beside a box would collide
        above: list[tuple[float, float]] = []
        below: list[tuple[float, float]] = []
        for b, (x0, x1) in sorted(zip(self.boxes, spans), key=lambda bs: bs[1][0]):
            if not b.label:
                continue
            lines = b.label.count("\n") + 1
            tw = self.text_width(b.label)
            if tw <= (x1 - x0) * 0.95 and lines <= 2:
                ax.text((x0 + x1) / 2, y, b.label, ha="center", va="center", fontsize=self.fontsize,
                        color=text_colour(b.colour), clip_on=True)
                continue
            label = b.label.replace("\n", " ")
            tw = self.text_width(label)
            if self._beside(label, x0, x1, tw, taken):
                continue
            self._over(label, x0, x1, tw, above, below)

    def _free(self, lo: float, hi: float, taken: list[tuple[float, float]]) -> bool:
        return 0 <= lo and hi <= self.scale.width and all(hi <= a or lo >= b for a, b in taken)

    def _beside(self, label: str, x0: float, x1: float, tw: float, taken: list[tuple[float, float]]) -> bool:
        for lo, edge, start, ha in ((x1 + PAD, x1, x1 + PAD, "left"), (x0 - PAD - tw, x0, x0 - PAD, "right")):
            if self._free(lo, lo + tw, [t for t in taken if not (t[0] == x0 and t[1] == x1)]):
                self.ax.text(start, self.y, label, ha=ha, va="center", fontsize=self.fontsize)
                self.ax.plot([edge, edge + (start - edge) * 0.8], [self.y, self.y], color="#444444", lw=0.5)
                taken.append((lo, lo + tw))
                return True
        return False

    def _over(self, label: str, x0: float, x1: float, tw: float, above: list, below: list) -> None:
        centre = (x0 + x1) / 2
        lo = min(max(centre - tw / 2, 0), max(self.scale.width - tw, 0))
        for placed, sign in ((above, 1), (below, -1)):
            if all(lo + tw <= a or lo >= b for a, b in placed) or placed is below:
                edge = self.y + sign * BAR_HEIGHT / 2
                self.ax.annotate(label, xy=(centre, edge), xytext=(lo + tw / 2, self.y + sign * 0.42),
                                 ha="center", va="bottom" if sign > 0 else "top", fontsize=self.fontsize - 0.5,
                                 arrowprops=dict(arrowstyle="-", lw=0.5, color="#444444"))
                placed.append((lo, lo + tw))
                return
