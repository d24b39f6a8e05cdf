"""KernelMemory.read: one dump read per physically contiguous run of pages, holes as before."""
from __future__ import annotations

import pytest

from kexecfw.vmcore.dumpfile import DumpFile, MemoryMissing, PhysRange
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcoreinfo import VmcoreInfo

PAGE = 4096
VBASE = 0xFFFF888000000000     # a direct-map address: translated only by the segments below


class CountingDump(DumpFile):
    """Physical pages 0..7 holding their page number; ``excluded`` pages filtered out by the dump level."""

    format, machine, page_size, path = "test", 62, PAGE, "counting"

    def __init__(self, vsegs: list[tuple[int, int, int]], excluded: frozenset[int] = frozenset()) -> None:
        self.notes, self.reads, self.vsegs, self.excluded = [], [], vsegs, excluded
        self._vmcoreinfo = VmcoreInfo.parse("NUMBER(phys_base)=0\n")

    def read_phys(self, paddr: int, size: int) -> bytes:
        self.reads.append((paddr, size))
        out = bytearray()
        for at in range(paddr, paddr + size):
            if at // PAGE in self.excluded or at >= 8 * PAGE:
                raise MemoryMissing(at, excluded=at // PAGE in self.excluded)
            out.append(at // PAGE)
        return bytes(out)

    def ranges(self) -> list[PhysRange]:
        return [PhysRange(0, 8 * PAGE)]

    def virtual_segments(self) -> list[tuple[int, int, int]]:
        return self.vsegs


def test_contiguous_pages_are_one_read():
    dump = CountingDump([(VBASE, 2 * PAGE, 4 * PAGE)])
    data = KernelMemory(dump).read(VBASE + 100, 3 * PAGE)
    assert data == bytes([2]) * (PAGE - 100) + bytes([3]) * PAGE + bytes([4]) * PAGE + bytes([5]) * 100
    assert dump.reads == [(2 * PAGE + 100, 3 * PAGE)]


def test_a_physical_discontinuity_splits_the_read():
    # virtual pages 0, 1 -> physical 5, 6; virtual page 2 -> physical 1
    dump = CountingDump([(VBASE, 5 * PAGE, 2 * PAGE), (VBASE + 2 * PAGE, PAGE, PAGE)])
    data = KernelMemory(dump).read(VBASE, 3 * PAGE)
    assert data == bytes([5]) * PAGE + bytes([6]) * PAGE + bytes([1]) * PAGE
    assert dump.reads == [(5 * PAGE, 2 * PAGE), (PAGE, PAGE)]


def test_excluded_pages_read_as_zeros_only_when_asked():
    dump = CountingDump([(VBASE, 2 * PAGE, 3 * PAGE)], excluded=frozenset({3}))
    mem = KernelMemory(dump)
    assert mem.read(VBASE, 3 * PAGE, excluded_as_zero=True) == bytes([2]) * PAGE + bytes(PAGE) + bytes([4]) * PAGE
    with pytest.raises(MemoryMissing) as e:
        mem.read(VBASE, 3 * PAGE)
    assert e.value.paddr == 3 * PAGE


def test_a_hole_is_still_missing_with_excluded_as_zero():
    dump = CountingDump([(VBASE, 6 * PAGE, 3 * PAGE)])       # physical 8 is past the dump
    with pytest.raises(MemoryMissing) as e:
        KernelMemory(dump).read(VBASE, 3 * PAGE, excluded_as_zero=True)
    assert e.value.paddr == 8 * PAGE
