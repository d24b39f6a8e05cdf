"""Page classification of a Linux 6.12 mem_map: page types in page_type's top byte, large folios
(order in the first tail page's flags), and tail pages that must never be judged on their own.

The mem_map is one SPARSEMEM section of Debian 13's riscv64 6.12 kernel: its real VMCOREINFO
(tests/data/riscv64-lab) and struct pages whose fields are those read from the lab's riscv64
crash dump (lab-results/riscv64-kexecfw-20261205, pfns given beside each), placed here at
chosen pfns. The large folios are built the way mm/internal.h's prep_compound_head() lays
them out in 6.12: ``_flags_1`` low byte = order, ``_head_1`` = head | 1, ``_nr_pages_mapped``
in the word where a page has ``mapping``.
"""
from __future__ import annotations

import struct

import pytest

from conftest import REPO
from kexecfw.elfnotes import VMCOREINFO_NOTE_NAME, read_core_notes
from kexecfw.vmcore.classify import Classifier
from kexecfw.vmcore.dumpfile import DumpFile, MemoryMissing, PhysRange
from kexecfw.vmcore.kdumpfmt import DL_EXCLUDE_CACHE, DL_EXCLUDE_USER_DATA
from kexecfw.vmcore.bounds import EM_RISCV
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcoreinfo import VmcoreInfo

PAGE = 4096
PAGE_OFFSET, PHYS_BASE = 0xFF60000000000000, 0x80000000     # the guest's linear map
FIRST_PFN = 0x80000                                          # section 16, the first of the guest's RAM
ROOT_PADDR, MEM_MAP_PADDR = 0xBDC40000, 0xBCE00000           # where this test keeps the tables
NODE_ZONE = 0xFFFE << 48                                     # the flags' node/zone bits of every real page
PG_UPTODATE, PG_DIRTY, PG_LRU, PG_HEAD, PG_SWAPBACKED = 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 17
SHMEM = NODE_ZONE | PG_UPTODATE | PG_DIRTY | PG_LRU | PG_SWAPBACKED | 0x2000   # pfn 0x80090's flags
SHMEM_MAPPING = 0xFF60000002D519B0                           # its address_space (tmpfs)
ANON_VMA = 0xFF6000000A610DD1                                # pfn 0x80e35's anon_vma | PAGE_MAPPING_ANON


def riscv64_612_info() -> VmcoreInfo:
    raw = (REPO / "tests" / "data" / "riscv64-lab" / "kexecfw" / "capture" / "vmcore-hdr+notes.bin").read_bytes()
    _, notes = read_core_notes(raw, "vmcore-hdr+notes.bin")
    (info,) = [n.desc for n in notes if n.name == VMCOREINFO_NOTE_NAME]
    return VmcoreInfo.parse(info)


class SectionDump(DumpFile):
    """riscv64 memory holding one section's mem_map (reached through a virtual segment, as an ELF
    vmcore's PT_LOAD gives it) and the mem_section tables in the linear map."""

    format = "test"
    machine = EM_RISCV
    page_size = PAGE

    def __init__(self, info: VmcoreInfo, mem_map: bytes) -> None:
        self.path, self.notes, self._vmcoreinfo = "section", [], info
        self.vmemmap = info.symbol("vmemmap")
        self.mem_map_vaddr = self.vmemmap + FIRST_PFN * info.size("page")
        mem_section = info.symbol("mem_section") - PAGE_OFFSET + PHYS_BASE
        root = bytearray(PAGE)                # mem_section[0]: a root of 128 struct mem_section
        nr = FIRST_PFN >> 15
        struct.pack_into("<Q", root, nr * info.size("mem_section") + info.offset("mem_section.section_mem_map"),
                         (self.mem_map_vaddr - FIRST_PFN * info.size("page")) | 0x3)    # PRESENT | HAS_MEM_MAP
        self.regions = {mem_section: struct.pack("<Q", ROOT_PADDR - PHYS_BASE + PAGE_OFFSET).ljust(PAGE, b"\0"),
                        ROOT_PADDR: bytes(root), MEM_MAP_PADDR: mem_map}

    def virtual_segments(self) -> list[tuple[int, int, int]]:
        return [(self.mem_map_vaddr, MEM_MAP_PADDR, len(self.regions[MEM_MAP_PADDR]))]

    def read_phys(self, paddr: int, size: int) -> bytes:
        for start, data in self.regions.items():
            if start <= paddr and paddr + size <= start + len(data):
                return data[paddr - start:paddr - start + size]
        raise MemoryMissing(paddr)

    def ranges(self) -> list[PhysRange]:
        return [PhysRange(s, s + len(d)) for s, d in sorted(self.regions.items())]


class MemMap:
    """The struct pages of one section, every page a plain allocated kernel page until set."""

    def __init__(self, info: VmcoreInfo) -> None:
        self.info, self.size = info, info.size("page")
        self.blob = bytearray(self.size << 15)
        for i in range(1 << 15):
            self.set(i, flags=NODE_ZONE, _mapcount=0xFFFFFFFF)

    def set(self, i: int, **fields: int) -> None:
        for name, value in fields.items():
            width = 4 if name == "_mapcount" else 8
            struct.pack_into("<I" if width == 4 else "<Q", self.blob, i * self.size + self.info.offset(f"page.{name}"),
                             value)

    def folio(self, i: int, order: int, head_flags: int, mapping: int, nr_pages_mapped: int, page_type: int = 0xFFFFFFFF):
        """A large folio at index i (6.12 layout); ``mapping`` of its first tail page is _nr_pages_mapped."""
        self.set(i, flags=head_flags | PG_HEAD, mapping=mapping, _mapcount=page_type)
        head = self.vaddr(i)
        for t in range(i + 1, i + (1 << order)):
            self.set(t, flags=NODE_ZONE | (order if t == i + 1 else 0), compound_head=head | 1, mapping=0)
        self.set(i + 1, mapping=nr_pages_mapped)

    def vaddr(self, i: int) -> int:
        return self.info.symbol("vmemmap") + (FIRST_PFN + i) * self.size


def excluded(mm: MemMap, level: int) -> tuple[set[int], dict[str, int]]:
    mem = KernelMemory(SectionDump(mm.info, bytes(mm.blob)))
    c = Classifier(mem, level)
    out = {pfn - FIRST_PFN + k for pfn, n in c.excluded([(FIRST_PFN, FIRST_PFN + (1 << 15))]) for k in range(n)}
    return out, c.stats


@pytest.fixture(scope="module")
def info() -> VmcoreInfo:
    info = riscv64_612_info()
    assert info.osrelease.startswith("6.12.") and info.offset("page.compound_order") is None
    return info


def test_612_page_types(info):
    mm = MemMap(info)
    mm.set(0x100, _mapcount=0xF0000000, private=1)                       # buddy head of order 1 (pfn 0x88338)
    mm.set(0x200, flags=SHMEM, mapping=SHMEM_MAPPING)                     # shmem on the LRU (pfn 0x80090)
    mm.set(0x300, flags=NODE_ZONE | 0x20828, mapping=ANON_VMA, _mapcount=0)   # anonymous (pfn 0x80e35)
    mm.set(0x400, _mapcount=0xF5000000, mapping=1, private=0x2A002A)      # slab, mapping word odd (pfn 0x826c4)
    mm.set(0x500, _mapcount=0xF2000000)                                   # page table (pfn 0x8a22a, a PMD page)
    mm.set(0x600, flags=NODE_ZONE | 0x2000)                               # PG_reserved (pfn 0x80200)
    got, stats = excluded(mm, 31)
    assert got == {0x100, 0x101, 0x200, 0x300}
    assert (stats["free"], stats["cache"], stats["user"]) == (2, 1, 1)


def test_612_large_folios_go_whole_and_their_tails_never_alone(info):
    mm = MemMap(info)
    mm.folio(0x1000, 2, SHMEM, SHMEM_MAPPING, nr_pages_mapped=3)          # tmpfs folio, 3 pages mapped
    mm.folio(0x2000, 2, NODE_ZONE | 0x20828, ANON_VMA, nr_pages_mapped=1)   # anonymous mTHP
    mm.folio(0x3000, 2, NODE_ZONE, 0, nr_pages_mapped=0, page_type=0xF4000000)   # hugetlb (6.9+ page type)
    mm.folio(0x4000, 2, NODE_ZONE, 0, nr_pages_mapped=5)                  # a kernel allocation (no LRU, no type)
    cache = set(range(0x1000, 0x1004))
    user = set(range(0x2000, 0x2004)) | set(range(0x3000, 0x3004))
    assert excluded(mm, 31)[0] == cache | user
    # at -d 8 the tmpfs folio stays whole: its first tail page's odd _nr_pages_mapped is no PAGE_MAPPING_ANON
    assert excluded(mm, DL_EXCLUDE_USER_DATA)[0] == user
    assert excluded(mm, DL_EXCLUDE_CACHE)[0] == cache


def test_an_order_the_pfn_is_not_aligned_to_is_no_folio(info):
    mm = MemMap(info)
    mm.folio(0x1001, 1, SHMEM, SHMEM_MAPPING, nr_pages_mapped=0)
    mm.set(0x1002, flags=NODE_ZONE | 4)                                   # order 4 at an odd pfn: corrupt
    assert excluded(mm, 31)[0] == {0x1001}
