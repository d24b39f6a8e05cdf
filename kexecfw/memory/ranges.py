"""Half-open physical address ranges and set operations on lists of them.

The kernel prints inclusive ends (``0-fff``); we keep ``end`` exclusive inside
kexecfw, so sizes are ``end - start`` and adjacent ranges touch without
arithmetic. Conversions happen only at the parsers and printers.
"""
from __future__ import annotations

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the capture boot's kdump save does not import typing
if TYPE_CHECKING:
    from typing import Iterable

from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord

# Physical addresses are 64-bit on every architecture kexecfw handles; a number read from a file
# beyond that is damage, not an address.
ADDRESS_LIMIT = 1 << 64


class Range(TupleRecord):
    """A tuple (start, end): equality, hashing and ordering are the tuple's."""

    __slots__ = ()
    start: int
    end: int  # exclusive

    def __new__(cls, start: int, end: int) -> "Range":
        if start < 0 or end < start:
            raise ValueError(f"invalid range {start:#x}-{end:#x}")
        return tuple.__new__(cls, (start, end))

    @classmethod
    def inclusive(cls, start: int, last: int) -> "Range":
        """Range from the kernel's inclusive notation ``start-last``."""
        return cls(start, last + 1)

    @classmethod
    def read(cls, start: int, last: int, what: str) -> "Range":
        """Range.inclusive of two numbers read from a file (``what`` names it): BadInputError when
        the end lies before the start or either is not a 64-bit address."""
        if not 0 <= start < ADDRESS_LIMIT or not 0 <= last < ADDRESS_LIMIT:
            raise BadInputError(f"{what}: {start:#x}-{last:#x} is not a range of 64-bit addresses")
        if last < start:
            raise BadInputError(f"{what}: ends before it starts ({start:#x}-{last:#x})")
        return cls(start, last + 1)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def last(self) -> int:
        """Inclusive end, as /proc/iomem prints it."""
        return self.end - 1

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.start <= addr < self.end

    def contains(self, other: "Range") -> bool:
        return self.start <= other.start and other.end <= self.end

    def overlaps(self, other: "Range") -> bool:
        """True when the two share at least one address (an empty range overlaps nothing)."""
        return self.start < other.end and other.start < self.end and self.size > 0 and other.size > 0

    def __str__(self) -> str:
        return f"{self.start:#018x}-{self.last:#018x}" if self.size else f"{self.start:#018x}-(empty)"


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted union: overlapping or touching ranges become one; empty ones vanish."""
    out: list[Range] = []
    for r in sorted(r for r in ranges if r.size):
        if out and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = Range(out[-1].start, r.end)
        else:
            out.append(r)
    return out


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """``ranges`` minus ``holes``, as a sorted merged list."""
    out = merge(ranges)
    for h in merge(holes):
        nxt: list[Range] = []
        for r in out:
            if not r.overlaps(h):
                nxt.append(r)
                continue
            if r.start < h.start:
                nxt.append(Range(r.start, h.start))
            if h.end < r.end:
                nxt.append(Range(h.end, r.end))
        out = nxt
    return out


def intersect(ranges: Iterable[Range], window: Iterable[Range]) -> list[Range]:
    """Parts of ``ranges`` that lie inside ``window``."""
    out: list[Range] = []
    win = merge(window)
    for r in merge(ranges):
        for w in win:
            s, e = max(r.start, w.start), min(r.end, w.end)
            if s < e:
                out.append(Range(s, e))
    return merge(out)


def clamp(ranges: Iterable[Range], lo: int, hi: int) -> list[Range]:
    """Parts of ``ranges`` inside ``[lo, hi)``."""
    return intersect(ranges, [Range(lo, hi)]) if hi > lo else []


def total_size(ranges: Iterable[Range]) -> int:
    return sum(r.size for r in merge(ranges))


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def align_down(value: int, align: int) -> int:
    return value // align * align
