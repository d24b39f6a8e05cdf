"""A broken, size-aware address axis: every interesting interval gets room by the log of its size.

On a linear axis a 256 MiB crash region in 64 GiB of RAM is a sliver and a
4 KiB DTB is invisible. Here each interval between two boundaries gets a width
of 1 + log2(size / 1 MiB) (at least 1), and gaps with nothing in them a fixed
small width, so every region and segment is visible and ordered.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable

_MIB = 1 << 20
GAP_WIDTH = 0.6


class AddressScale:
    def __init__(self, boundaries: Iterable[int], covered: Iterable[tuple[int, int]]) -> None:
        points = sorted(set(boundaries))
        if len(points) < 2:
            points = [points[0], points[0] + 1] if points else [0, 1]
        spans = sorted(covered)
        self.addrs: list[int] = [points[0]]
        self.pos: list[float] = [0.0]
        for lo, hi in zip(points, points[1:]):
            inside = any(s <= lo and hi <= e for s, e in spans)
            width = max(1.0, 1.0 + math.log2(max(hi - lo, 1) / _MIB)) if inside else GAP_WIDTH
            self.addrs.append(hi)
            self.pos.append(self.pos[-1] + width)

    @property
    def width(self) -> float:
        return self.pos[-1]

    def __call__(self, addr: int) -> float:
        if addr <= self.addrs[0]:
            return 0.0
        if addr >= self.addrs[-1]:
            return self.pos[-1]
        i = bisect.bisect_right(self.addrs, addr) - 1
        lo, hi = self.addrs[i], self.addrs[i + 1]
        return self.pos[i] + (self.pos[i + 1] - self.pos[i]) * (addr - lo) / (hi - lo)


def size_text(n: int) -> str:
    """A byte count for labels: 384 MiB, 4 KiB, 1.5 GiB, 1023 MiB (never 1.02e+03)."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{n} B"
