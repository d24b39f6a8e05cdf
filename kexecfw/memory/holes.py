"""Find a place for a segment among free ranges, the way kexec-tools' locate_hole does.

A hole is a free range; a fit is the lowest (or, top-down, the highest)
``align``-aligned start such that ``[start, start+size)`` lies inside one hole
and inside ``[min_addr, max_addr)``.
"""
from __future__ import annotations

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the capture boot's kdump save does not import typing
if TYPE_CHECKING:
    from typing import Iterable

from kexecfw.memory.ranges import Range, align_down, align_up, clamp


def find_hole(free: Iterable[Range], size: int, *, align: int = 4096, min_addr: int = 0,
              max_addr: int = 1 << 64, top_down: bool = False) -> int | None:
    """Start address of the first fit, or None when nothing fits."""
    if size <= 0 or align <= 0 or align & (align - 1):
        raise ValueError(f"bad hole request size={size:#x} align={align:#x}")
    candidates = clamp(free, min_addr, max_addr)
    if top_down:
        for hole in reversed(candidates):
            start = align_down(hole.end - size, align)
            if start >= hole.start and hole.end - size >= 0:
                return start
    else:
        for hole in candidates:
            start = align_up(hole.start, align)
            if start + size <= hole.end:
                return start
    return None
