"""Places segments into free memory, one at a time, like kexec-tools' add_buffer.

The planner starts with the ranges a load may use (System RAM for a normal
load, the main crash region for a panic load) and removes each placed
segment from them. Plugins call :meth:`Planner.add` (find a hole) or
:meth:`Planner.add_at` (a fixed address); both round ``memsz`` up to the page
size, as the kernel requires.
"""
from __future__ import annotations

from kexecfw.errors import NoSpaceError
from kexecfw.memory.holes import find_hole
from kexecfw.memory.ranges import Range, align_up, subtract, total_size
from kexecfw.segments.plan import Segment

_MIB = 1 << 20


def _frozen(buf: bytes) -> bytes:
    """``buf`` as a segment keeps it: bytes and views (a mapped kernel or initrd, kexecfw.load.read_input)
    as they are, without copying tens of MiB; a bytearray copied, so that later changes do not reach the plan."""
    return buf if isinstance(buf, (bytes, memoryview)) else bytes(buf)


class Planner:
    def __init__(self, allowed: list[Range], *, page_size: int = 4096, what: str = "System RAM") -> None:
        self.page_size = page_size
        self.allowed = list(allowed)
        self.what = what                    # words for error messages: "the crash region 0x..-0x.."
        self.segments: list[Segment] = []

    @property
    def free(self) -> list[Range]:
        return subtract(self.allowed, [s.range for s in self.segments])

    def get(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def add(self, name: str, buf: bytes, *, memsz: int | None = None, align: int | None = None,
            min_addr: int = 0, max_addr: int = 1 << 64, top_down: bool = False) -> Segment:
        """Place ``buf`` in the first (or, ``top_down``, the last) hole that fits."""
        align = max(align or self.page_size, self.page_size)
        size = self._memsz(buf, memsz)
        mem = find_hole(self.free, size, align=align, min_addr=min_addr, max_addr=max_addr, top_down=top_down)
        if mem is None:
            self._no_space(name, size, align, min_addr, max_addr)
        return self._append(Segment(name, _frozen(buf), mem, size))

    def add_at(self, name: str, buf: bytes, mem: int, *, memsz: int | None = None) -> Segment:
        """Place ``buf`` at ``mem`` exactly; it must be page-aligned and free."""
        size = self._memsz(buf, memsz)
        want = Range(mem, mem + size)
        if mem % self.page_size or not any(f.contains(want) for f in self.free):
            raise NoSpaceError(f"{name} segment at {want} is not free page-aligned memory in {self.what}")
        return self._append(Segment(name, _frozen(buf), mem, size))

    def replace(self, segment: Segment, buf: bytes) -> Segment:
        """Swap a placed segment's buffer (same place and size), e.g. once the purgatory is linked."""
        if len(buf) > segment.memsz:
            raise ValueError(f"{segment.name}: new buffer is larger than its memsz")
        new = Segment(segment.name, _frozen(buf), segment.mem, segment.memsz)
        self.segments[self.segments.index(segment)] = new
        return new

    def _memsz(self, buf: bytes, memsz: int | None) -> int:
        size = max(len(buf), memsz or 0)
        return align_up(max(size, 1), self.page_size)

    def _append(self, segment: Segment) -> Segment:
        self.segments.append(segment)
        return segment

    def _no_space(self, name: str, size: int, align: int, lo: int, hi: int) -> None:
        used = sum(s.memsz for s in self.segments)
        have = total_size(self.allowed)
        need = used + size
        window = "" if (lo, hi) == (0, 1 << 64) else f" between {lo:#x} and {hi:#x}"
        if need > have:
            raise NoSpaceError(
                f"{self.what} is too small: the segments need at least {align_up(need, _MIB) // _MIB} MiB "
                f"({name} alone {size / _MIB:.1f} MiB) but it has {have / _MIB:.0f} MiB; "
                "reserve more (e.g. a larger crashkernel=)")
        raise NoSpaceError(
            f"no free {size / _MIB:.1f} MiB hole aligned to {align:#x}{window} in {self.what} for the {name} "
            f"segment ({(have - used) / _MIB:.0f} MiB free in pieces); reserve more memory")
