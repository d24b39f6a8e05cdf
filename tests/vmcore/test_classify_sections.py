"""Whole-section classification (Classifier._section's vectors) against the one-page rules, on
filled sections of Linux 6.12's riscv64 layout (test_classify_folios.py's VMCOREINFO and real struct
page values): every kind of page a filled guest has, interleaved at random, over several sections.

The reference is the same Classifier with every page sent through its one-by-one rules
(OneByOne): a ``type_range`` covering every _mapcount makes every page (but tails) one that may
carry a page type, and no buddy page is settled with its section.
"""
from __future__ import annotations

import random

import pytest

from kexecfw.vmcore.classify import Classifier
from kexecfw.vmcore.dumpfile import MemoryMissing, PhysRange
from kexecfw.vmcore.kdumpfmt import (DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRI, DL_EXCLUDE_FREE,
                                     DL_EXCLUDE_USER_DATA)
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcoreinfo import VmcoreInfo
from test_classify_folios import (ANON_VMA, FIRST_PFN, MEM_MAP_PADDR, NODE_ZONE, ROOT_PADDR, SHMEM,
                                  SHMEM_MAPPING, MemMap, SectionDump, riscv64_612_info)

PER_SECTION = 1 << 15
MEM_MAPS_PADDR = 1 << 40                # where SectionsDump keeps its sections' struct pages: clear of the tables
PG_PRIVATE = 1 << 14                    # riscv64 6.12's VMCOREINFO NUMBER(PG_private)
PG_HWPOISON = 1 << 22                   # added below: Debian's riscv64 kernel has no CONFIG_MEMORY_FAILURE
SLAB_TYPE = 0xF5000000                  # PAGE_SLAB_MAPCOUNT_VALUE (6.12 has no PG_slab)
ANON_FLAGS = NODE_ZONE | 0x20828                                  # pfn 0x80e35's: an anonymous page on the LRU


@pytest.fixture(scope="module")
def info() -> VmcoreInfo:
    return VmcoreInfo({**riscv64_612_info().raw, "NUMBER(PG_hwpoison)": "22"})


class SectionsDump(SectionDump):
    """SectionDump with ``count`` sections from FIRST_PFN, all with the struct pages ``mem_map``."""

    def __init__(self, info, mem_map: bytes, count: int) -> None:
        super().__init__(info, mem_map)
        self.count, self.mem_map = count, mem_map
        root = bytearray(self.regions[ROOT_PADDR])
        ms_size, off = info.size("mem_section"), info.offset("mem_section.section_mem_map")
        first = (FIRST_PFN >> 15) * ms_size + off
        for k in range(1, count):        # mem_map minus the section's first pfn: the same for every section
            root[first + k * ms_size:first + k * ms_size + 8] = root[first:first + 8]
        self.regions[ROOT_PADDR] = bytes(root)
        del self.regions[MEM_MAP_PADDR]

    def virtual_segments(self) -> list[tuple[int, int, int]]:
        return [(self.mem_map_vaddr, MEM_MAPS_PADDR, len(self.mem_map) * self.count)]

    def ranges(self) -> list[PhysRange]:
        return super().ranges() + [PhysRange(MEM_MAPS_PADDR, MEM_MAPS_PADDR + len(self.mem_map) * self.count)]

    def read_phys(self, paddr: int, size: int) -> bytes:
        offset = paddr - MEM_MAPS_PADDR
        if 0 <= offset < len(self.mem_map) * self.count:
            offset %= len(self.mem_map)
            if offset + size > len(self.mem_map):
                raise MemoryMissing(paddr)
            return self.mem_map[offset:offset + size]
        return super().read_phys(paddr, size)


def filled_section(info, seed: int) -> MemMap:
    """A section as a filled guest has them (the 8 GiB bench guest's classes: half anonymous, some of
    it in 2 MiB folios, a third page cache, most of it with PG_private, a seventh free), in random order."""
    rng = random.Random(seed)
    mm = MemMap(info)
    i = 0
    while i < PER_SECTION:
        kind = rng.choices(["anon", "thp", "cache", "cache_private", "free", "slab", "kernel", "hwpoison", "odd"],
                           [40, 2, 3, 28, 12, 5, 5, 0.2, 1])[0]
        if kind == "thp" and i % 512 == 0 and i + 512 <= PER_SECTION:
            mm.folio(i, 9, ANON_FLAGS, ANON_VMA, nr_pages_mapped=rng.choice([0, 1, 511]))
            i += 512
            continue
        if kind == "free":
            order = min(rng.choice([0, 0, 1, 2, 3, 5, 9, 10]), (i & -i).bit_length() - 1 if i else 10)
            order = min(order, (PER_SECTION - i).bit_length() - 1)
            mm.set(i, _mapcount=0xF0000000, private=order)
            i += 1 << order
            continue
        if kind == "anon":
            mm.set(i, flags=ANON_FLAGS, mapping=ANON_VMA, _mapcount=0)
        elif kind == "cache":
            mm.set(i, flags=SHMEM, mapping=SHMEM_MAPPING, _mapcount=rng.choice([0, 0xFFFFFFFF]))
        elif kind == "cache_private":
            mm.set(i, flags=SHMEM | PG_PRIVATE, mapping=SHMEM_MAPPING, private=0xFF60000001234560)
        elif kind == "slab":
            mm.set(i, flags=NODE_ZONE, mapping=1, _mapcount=SLAB_TYPE)
        elif kind == "hwpoison":
            mm.set(i, flags=NODE_ZONE | PG_HWPOISON | rng.choice([0, 0x20]))
        elif kind == "odd":        # flags no rule uses with an anonymous mapping, a stray type
            mm.set(i, flags=NODE_ZONE | rng.getrandbits(12) << 8, mapping=rng.choice([1, ANON_VMA, 0]),
                   _mapcount=rng.choice([0xF1000000, 0xF0000000, 3]), private=rng.choice([0, 1, 18, 19, 1 << 40]))
        i += 1
    return mm


class OneByOne(Classifier):
    """Every page but tails through the one-page rules of Classifier._section."""

    def __init__(self, mem: KernelMemory, level: int) -> None:
        super().__init__(mem, level)
        self.type_range = (0, 0xFFFFFFFF)

    def _free_pages(self, vec) -> int:
        return 0


def classify(info, mem_map: bytes, count: int, level: int, one_by_one: bool) -> tuple[list, dict[str, int]]:
    c = (OneByOne if one_by_one else Classifier)(KernelMemory(SectionsDump(info, mem_map, count)), level)
    return list(c.excluded([(FIRST_PFN, FIRST_PFN + count * PER_SECTION)])), c.stats


@pytest.mark.parametrize("level", [31, DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRI, DL_EXCLUDE_USER_DATA,
                                   DL_EXCLUDE_FREE, DL_EXCLUDE_CACHE | DL_EXCLUDE_USER_DATA])
def test_whole_sections_exclude_what_the_one_page_rules_do(info, level):
    mem_map = bytes(filled_section(info, seed=level).blob)
    runs, stats = classify(info, mem_map, 3, level, one_by_one=False)
    assert (runs, stats) == classify(info, mem_map, 3, level, one_by_one=True)
    assert runs[-1][0] + runs[-1][1] > FIRST_PFN + 2 * PER_SECTION and not stats["no_mem_map"]   # all 3 read
    if level == 31:       # every class of a filled guest is there
        assert min(stats["free"], stats["cache"], stats["cache_private"], stats["user"], stats["hwpoison"]) > 0
    assert sum(n for _, n in runs) == sum(v for k, v in stats.items() if k != "no_mem_map")


@pytest.mark.parametrize("level", [31, DL_EXCLUDE_CACHE_PRI])
def test_section_bitmaps_hold_the_runs(info, level):
    mem_map = bytes(filled_section(info, seed=level + 1).blob)
    runs, _ = classify(info, mem_map, 3, level, one_by_one=False)
    c = Classifier(KernelMemory(SectionsDump(info, mem_map, 3)), level)
    from_bitmaps = set()
    for first, bitmap in c.excluded_bitmaps([(FIRST_PFN, FIRST_PFN + 3 * PER_SECTION)]):
        assert first % 8 == 0 and len(bitmap) == PER_SECTION // 8
        bits = int.from_bytes(bitmap, "little")
        from_bitmaps |= {first + k for k in range(len(bitmap) * 8) if bits >> k & 1}
    assert from_bitmaps == {pfn + k for pfn, n in runs for k in range(n)}
