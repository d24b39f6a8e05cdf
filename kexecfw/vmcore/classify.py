"""Page classification from the crashed kernel's mem_map, with VMCOREINFO only (makedumpfile -d bits).

mem_map is found through SPARSEMEM: ``mem_section`` (SYMBOL, the root array when
SPARSEMEM_EXTREME), ``section_mem_map`` (an encoded pointer: mem_map minus the
section's first pfn, low bits are flags, include/linux/mmzone.h), ``SIZE(page)``.
Each section's struct pages are read in one go (2 MiB for a 128 MiB section)
and tested all at once with bytes operations (Classifier._section); only the
few pages those tests cannot settle are unpacked, with a struct format built
from the VMCOREINFO offsets.

Rules (those of makedumpfile's page filter, restated):

* free (16): a buddy page and the 2^order pages it heads (order in ``page.private``);
* cache (2): on the LRU or in the swap cache (PG_swapcache counts only with
  PG_swapbacked), not anonymous, without PG_private;
* cache private (4): the same with PG_private;
* user (8): anonymous (``mapping`` has PAGE_MAPPING_ANON) and not slab, or a
  hugetlbfs page (up to 6.5 ``compound_dtor`` == HUGETLB_PAGE_DTOR; 6.6-6.8 PG_hugetlb in
  the first tail page's flags; from 6.9 the page type);
* always: hardware-poisoned pages and logically offline pages
  (``_mapcount`` == PAGE_OFFLINE_MAPCOUNT_VALUE).

Page types (buddy, offline, and since 6.10 slab and hugetlb) live in ``page_type``, which
shares ``_mapcount``'s place. VMCOREINFO gives ``PAGE_<TYPE>_MAPCOUNT_VALUE``: up to 6.11 it
is ``~PG_<type>`` (one cleared bit under PAGE_TYPE_BASE 0xf0000000: the page has the type
when ``page_type & (0xf0000000 | PG_<type>) == 0xf0000000``); from 6.12 the type is the top
byte of page_type and the exported value has its low 24 bits clear (then the top bytes are
compared).

A compound page (PG_head) excluded as cache or user takes its tail pages with it. Its order
is the first tail page's ``compound_order`` up to 6.5; from 6.6 (VMCOREINFO then exports
PG_hugetlb, from 6.9 PAGE_HUGETLB_MAPCOUNT_VALUE, and no compound_order) it is the low byte
of that page's flags (``folio._flags_1``). A tail page (``compound_head`` bit 0) is never
excluded on its own: its ``mapping`` word is the folio's (6.12: ``_nr_pages_mapped``, odd for
a folio with an odd number of pages mapped; 6.1: ``compound_pincount``), not an address_space,
so its PAGE_MAPPING_ANON bit means nothing. Zero pages (1) are found
by the writer while it reads them. Memory for classification: one section of
struct pages at a time (SIZE(page) x pages per section).
"""
from __future__ import annotations

import functools
import re

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: a capture kernel's save does not import typing
if TYPE_CHECKING:
    from typing import Iterator

from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import U64_MAX
from kexecfw.vmcore.dumpfile import MemoryMissing
from kexecfw.vmcore.kdumpfmt import (DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRI, DL_EXCLUDE_FREE,
                                     DL_EXCLUDE_USER_DATA)
from kexecfw.vmcore.kmem import KernelMemory, TranslationError
from kexecfw.vmcoreinfo import struct_layout

PAGE_MAPPING_ANON = 0x1
PAGE_TYPE_BASE = 0xF0000000


def page_type_match(value: int | None) -> tuple[int, int] | None:
    """(mask, expected): a page has the type of VMCOREINFO's PAGE_*_MAPCOUNT_VALUE ``value`` when
    its 32-bit page_type/_mapcount has ``mapcount & mask == expected``."""
    if value is None:
        return None
    v = value & 0xFFFFFFFF
    if v & 0x00FFFFFF == 0:                      # 6.12+: the type is the top byte
        return 0xFF000000, v
    return PAGE_TYPE_BASE | (~v & 0xFFFFFFFF), PAGE_TYPE_BASE    # up to 6.11: ~PG_<type>


def page_type_test(value: int | None):
    """A predicate on a page's 32-bit page_type/_mapcount for VMCOREINFO's PAGE_*_MAPCOUNT_VALUE."""
    match = page_type_match(value)
    if match is None:
        return lambda mapcount: False
    mask, expected = match
    return lambda mapcount: (mapcount & mask) == expected


def page_type_range(value: int | None) -> tuple[int, int] | None:
    """The least and greatest 32-bit page_type/_mapcount that page_type_test(value) can accept."""
    if value is None:
        return None
    v = value & 0xFFFFFFFF
    if v & 0x00FFFFFF == 0:                      # 6.12+: any low 24 bits under the type's top byte
        return v, v | 0x00FFFFFF
    mask = PAGE_TYPE_BASE | (~v & 0xFFFFFFFF)    # up to 6.11: the base bits set, the other mask bits clear
    return PAGE_TYPE_BASE, PAGE_TYPE_BASE | (~mask & 0xFFFFFFFF)


# In a section's byte-per-page vectors (Classifier._section): one page, a run of pages
_ONE = re.compile(rb"\x01")
_RUNS = re.compile(rb"\x01+")


# bytes.translate tables: 1 for the byte values that pass a test, 0 for the others
@functools.lru_cache(maxsize=None)
def _mask_table(mask: int) -> bytes:
    return bytes(1 if b & mask else 0 for b in range(256))


@functools.lru_cache(maxsize=None)
def _range_table(lo: int, hi: int) -> bytes:
    return bytes(1 if lo <= b <= hi else 0 for b in range(256))


@functools.lru_cache(maxsize=None)
def _masked_table(mask: int, value: int) -> bytes:
    return bytes(1 if b & mask == value else 0 for b in range(256))


_NOT_FF_TABLE = bytes(1 if b != 0xFF else 0 for b in range(256))
# bit k for a non-zero byte: the eighth k of a byte-per-page vector, packed
_BIT_TABLES = [bytes(1 << k if b else 0 for b in range(256)) for k in range(8)]


def _pack_bits(pages: bytes) -> bytes:
    """A vector of one byte per page (0 or 1) as an LSB-first bitmap, eight pages a byte (in C:
    a strided slice and a table per bit position, no Python work per page)."""
    pages += bytes(-len(pages) % 8)
    packed = 0
    for k in range(8):
        packed |= int.from_bytes(pages[k::8].translate(_BIT_TABLES[k]), "big")
    return packed.to_bytes(len(pages) // 8, "big")


class _PageVectors:
    """Tests on one field of every struct page of a section, each result an int with one byte per
    page (1: the test holds; the section's first page in the most significant byte), so that
    tests combine with & | ^ on whole sections at once. Made from bytes slices with a stride of
    SIZE(page) and bytes.translate: C loops, no Python work per page. Little-endian fields (as
    the struct page format). A field VMCOREINFO does not give (offset None) reads as 0.
    """

    def __init__(self, blob: bytes, page_struct: int, npages: int) -> None:
        # a strided slice of bytes is several times quicker than one of a memoryview
        self.blob = blob if isinstance(blob, bytes) else bytes(blob)
        self.page_struct, self.end = page_struct, npages * page_struct
        self.ones = int.from_bytes(b"\x01" * npages, "big")
        self.columns: dict[int, bytes] = {}

    def _test(self, offset: int, table: bytes) -> int:
        column = self.columns.get(offset)
        if column is None:
            column = self.columns[offset] = self.blob[offset:self.end:self.page_struct]
        return int.from_bytes(column.translate(table), "big")

    def bits(self, offset: int | None, size: int, mask: int) -> int:
        """Pages whose ``size``-byte field at ``offset`` has any bit of ``mask`` set."""
        out = 0
        if offset is None:
            return out
        for k in range(size):
            m = (mask >> (8 * k)) & 0xFF
            if m:
                out |= self._test(offset + k, _mask_table(m))
        return out

    def byte_in(self, offset: int, lo: int, hi: int) -> int:
        """Pages whose byte at ``offset`` lies in [lo, hi]."""
        return self._test(offset, _range_table(lo, hi))

    def masked_equal(self, offset: int, size: int, mask: int, value: int) -> int:
        """Pages whose ``size``-byte field at ``offset`` has ``field & mask == value``."""
        out = self.ones
        for k in range(size):
            m = (mask >> (8 * k)) & 0xFF
            if m:
                out &= self._test(offset + k, _masked_table(m, (value >> (8 * k)) & m))
        return out

    def maybe_in_range(self, offset: int | None, lo: int, hi: int) -> int:
        """Pages whose u32 at ``offset`` may lie in [lo, hi]: all those that do, and maybe some others
        (its top byte in the range of the top bytes, and not 0xffffffff when hi is less)."""
        if lo > hi:
            return 0
        if offset is None:
            return self.ones if lo <= 0 <= hi else 0
        out = self._test(offset + 3, _range_table(lo >> 24, hi >> 24))
        if hi < 0xFFFFFFFF:
            not_ff = _NOT_FF_TABLE
            out &= (self._test(offset, not_ff) | self._test(offset + 1, not_ff)
                    | self._test(offset + 2, not_ff) | self._test(offset + 3, not_ff))
        return out


MAX_BUDDY_ORDER = 11 + 8       # a buddy page's order (page.private) at or above this is read as 0 (corrupt)
SECTION_MAP_MASK_BITS = 6       # flags below the encoded mem_map pointer (mmzone.h SECTION_MAP_LAST_BIT <= 6)
# Bounds of the VMCOREINFO numbers of the mem_map layout: no kernel has more than 2^30-byte sections
# (arm64 64K pages before 5.12, ia64, sparc64; 27 on x86_64 and arm64 4K), a struct mem_section over
# 32 bytes or a struct page over ~100. With them a section's struct pages (read at once) are at most
# 2^18 x 256 bytes.
MAX_SECTION_BITS = 30
MAX_MEM_SECTION_SIZE = 256
MAX_PAGE_STRUCT_SIZE = 256


class Classifier:
    """Excluded pfns of the dump levels that need mem_map (2, 4, 8, 16)."""

    def __init__(self, mem: KernelMemory, dump_level: int) -> None:
        self.mem = mem
        self.level = dump_level
        c = mem.checked
        self.page_size = mem.page_size
        why = f"cannot filter pages at dump level {dump_level}; use -d 0 or -d 1"
        self.section_bits = c.need_shift("SECTION_SIZE_BITS", c.page_shift, MAX_SECTION_BITS, why)
        self.physmem_bits = c.need_shift("MAX_PHYSMEM_BITS", self.section_bits, c.arch.phys_bits, why)
        self.mem_section = c.need_symbol("mem_section", why)
        self.ms_size = c.need_size("mem_section", MAX_MEM_SECTION_SIZE, why)
        self.ms_map_off = c.need_offset("mem_section.section_mem_map", self.ms_size, 8, why)
        self.page_struct = ps = c.need_size("page", MAX_PAGE_STRUCT_SIZE, why)
        self.pages_per_section = 1 << (self.section_bits - c.page_shift)
        nr_sections = 1 << (self.physmem_bits - self.section_bits)
        roots = c.within("LENGTH(mem_section)", 1, nr_sections)
        per_root = self.page_size // self.ms_size
        self.extreme = roots is not None and per_root > 0 and roots * per_root == nr_sections and roots != nr_sections
        self.per_root = per_root if self.extreme else 1
        self.off = {"flags": c.need_offset("page.flags", ps, 8, why),
                    "mapping": c.need_offset("page.mapping", ps, 8, why),
                    "private": c.offset("page.private", ps, 8), "_mapcount": c.offset("page._mapcount", ps, 4)}
        self.o_compound_order = c.offset("page.compound_order", ps)
        self.o_compound_dtor = c.offset("page.compound_dtor", ps)
        self.o_compound_head = c.offset("page.compound_head", ps, 8)
        self.pg = {n: c.shift(f"PG_{n}", 0, 63) for n in ("lru", "private", "swapcache", "swapbacked", "slab",
                                                           "hwpoison")}
        self.pg_hugetlb = c.shift("PG_hugetlb", 8, 63)       # 6.6-6.8: a flag of the first tail page
        self.head_mask = c.number("PG_head_mask", 0, U64_MAX) or 0

        def page_type(name: str) -> int | None:     # an int or unsigned int page_type value
            return c.number(name, -(1 << 31), 0xFFFFFFFF)

        self.buddy_value = page_type("PAGE_BUDDY_MAPCOUNT_VALUE")
        self.offline_value = page_type("PAGE_OFFLINE_MAPCOUNT_VALUE")
        self.hugetlb_dtor = c.number("HUGETLB_PAGE_DTOR", 0, 0xFF)     # compound_dtor is a byte
        self.is_buddy = page_type_test(self.buddy_value)
        self.is_offline = page_type_test(self.offline_value)
        slab_value, hugetlb_value = page_type("PAGE_SLAB_MAPCOUNT_VALUE"), page_type("PAGE_HUGETLB_MAPCOUNT_VALUE")
        self.is_slab_type = page_type_test(slab_value)          # 6.10+
        self.is_hugetlb_type = page_type_test(hugetlb_value)    # 6.9+
        # 6.6+: the folio order is the low byte of the first tail page's flags (folio_order())
        self.order_in_flags_1 = self.o_compound_order is None and (hugetlb_value is not None
                                                                   or self.pg_hugetlb is not None)
        # _mapcount values that may be a page type a rule looks at (a cheap test before the exact ones)
        type_values = (self.buddy_value, self.offline_value, slab_value, hugetlb_value)
        ranges = [r for r in map(page_type_range, type_values) if r]
        self.type_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (1, 0)
        if dump_level & DL_EXCLUDE_FREE and (self.buddy_value is None or self.off["_mapcount"] is None):
            raise BadInputError("VMCOREINFO lacks NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE): cannot find free pages; "
                                "drop 16 from the dump level")
        # one struct page as a tuple: flags, mapping, private, _mapcount (missing fields read as 0)
        fields = [("flags", self.off["flags"], "Q"), ("mapping", self.off["mapping"], "Q")]
        if self.off["private"] is not None:
            fields.append(("private", self.off["private"], "Q"))
        if self.off["_mapcount"] is not None:
            fields.append(("_mapcount", self.off["_mapcount"], "i"))
        self.page_fmt, self.field_names = struct_layout("page", self.page_struct, fields)
        self.stats = {"free": 0, "cache": 0, "cache_private": 0, "user": 0, "hwpoison": 0, "offline": 0,
                      "no_mem_map": 0}

    def _section_mem_map(self, nr: int) -> int:
        if self.extreme:
            root_ptr = self.mem.read_u64(self.mem_section + (nr // self.per_root) * 8)
            if root_ptr == 0:
                return 0
            addr = root_ptr + (nr % self.per_root) * self.ms_size
        else:
            addr = self.mem_section + nr * self.ms_size
        encoded = self.mem.read_u64(addr + self.ms_map_off)
        return encoded & ~((1 << SECTION_MAP_MASK_BITS) - 1)

    def _sections(self, pfn_runs: list[tuple[int, int]]) -> list[int]:
        return sorted({nr for lo, hi in pfn_runs
                       for nr in range(lo // self.pages_per_section, (hi - 1) // self.pages_per_section + 1)})

    def excluded(self, pfn_runs: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """(first_pfn, count) runs to exclude, for the present pfn runs given, in pfn order.

        Adjacent runs are merged: a machine whose memory is full of 4 KiB user and cache pages
        has hundreds of thousands of short runs (a filled 8 GiB guest: 552,000 runs, 271 once merged).
        """
        start, count = -1, 0
        for nr in self._sections(pfn_runs):
            pages = self._section(nr)
            if pages is None:
                continue
            first = nr * self.pages_per_section
            for match in _RUNS.finditer(pages):
                pfn, n = first + match.start(), match.end() - match.start()
                if pfn == start + count:
                    count += n
                    continue
                if count:
                    yield start, count
                start, count = pfn, n
        if count:
            yield start, count

    def excluded_bitmaps(self, pfn_runs: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
        """The pages to exclude, for the present pfn runs given, as (first_pfn, bitmap) per section
        in pfn order: bit k of the bitmap's byte j (LSB first, as in a kdump bitmap) is pfn
        first_pfn + 8j + k; first_pfn is a multiple of 8. Sections with nothing to exclude are left out.

        The same pages as excluded(), without any Python work per run: a bitmap is ANDed in whole.
        """
        for nr in self._sections(pfn_runs):
            pages = self._section(nr)
            if pages is None:
                continue
            first = nr * self.pages_per_section
            pad = first % 8
            yield first - pad, _pack_bits(bytes(pad) + pages)

    def _section(self, nr: int) -> bytes | None:
        """One byte per page of section ``nr``: 1 for the pages to exclude (None: none to exclude)."""
        pps = self.pages_per_section
        start_pfn = nr * pps
        try:
            base = self._section_mem_map(nr)
            if base == 0:
                return None
            mem_map = (base + start_pfn * self.page_struct) & ((1 << 64) - 1)
            blob = self.mem.read(mem_map, pps * self.page_struct)
        except (MemoryMissing, TranslationError):
            # No struct pages for this section in the dump: keep its pages (never drop what we can't classify).
            self.stats["no_mem_map"] += pps
            return None
        level = self.level
        bit = {k: (1 << v if v is not None else 0) for k, v in self.pg.items()}
        lru, private, swapcache, swapbacked = bit["lru"], bit["private"], bit["swapcache"], bit["swapbacked"]
        slab, hwpoison = bit["slab"], bit["hwpoison"]
        is_buddy, is_offline, is_slab_type = self.is_buddy, self.is_offline, self.is_slab_type
        is_hugetlb_type = self.is_hugetlb_type
        head_mask = self.head_mask
        want_free = level & DL_EXCLUDE_FREE
        want_cache, want_cache_pri = level & DL_EXCLUDE_CACHE, level & DL_EXCLUDE_CACHE_PRI
        want_user = level & DL_EXCLUDE_USER_DATA
        ps = self.page_struct
        npages = len(blob) // ps
        page_fmt = self.page_fmt
        names = self.field_names
        i_flags, i_map = names.index("flags"), names.index("mapping")
        i_priv = names.index("private") if "private" in names else None
        i_mc = names.index("_mapcount") if "_mapcount" in names else None

        # Sorting the pages out one by one in Python was most of the work of `save -d 31` (and, in a
        # filled guest, the page cache is a third of its pages). Instead every rule that looks at one
        # page alone is applied to all pages of the section at once (bytes and int operations, in C;
        # _PageVectors), and only the pages whose rule needs more go one by one: those that may carry
        # a page type (buddy, offline, slab, hugetlb: _mapcount in the types' range) and compound heads
        # (their order, hugetlb). A tail page is settled by its head, never alone.
        vec = _PageVectors(blob, ps, npages)
        o_flags = self.off["flags"]
        type_vec = vec.maybe_in_range(self.off["_mapcount"], *self.type_range)
        tail_vec = vec.bits(self.o_compound_head, 8, 1)
        alone = vec.ones & ~(type_vec | vec.bits(o_flags, 8, head_mask) | tail_vec)   # no page type, no compound page
        # Free pages of order 0, the most of a fragmented free memory, are settled here too: a buddy
        # page whose order (page.private) is 0, or out of bounds, is one page.
        free = self._free_pages(vec) & ~tail_vec if want_free else 0
        one_by_one = vec.ones & ~(alone | tail_vec | free)
        anon = vec.bits(self.off["mapping"], 8, PAGE_MAPPING_ANON) & ~vec.bits(o_flags, 8, slab) & alone
        is_cache = vec.bits(o_flags, 8, lru)
        if swapcache:
            is_cache |= vec.bits(o_flags, 8, swapcache) & (vec.bits(o_flags, 8, swapbacked) if swapbacked
                                                           else vec.ones)
        is_cache &= alone & ~anon
        kinds = dict.fromkeys(("free", "cache", "cache_private", "user", "hwpoison"), 0)
        kinds["free"] = free
        if want_cache:
            kinds["cache"] = is_cache & ~vec.bits(o_flags, 8, private)
        if want_cache_pri:
            kinds["cache_private"] = is_cache & ~kinds["cache"]
        if want_user:
            kinds["user"] = anon
        if hwpoison:
            kinds["hwpoison"] = vec.bits(o_flags, 8, hwpoison) & alone & ~(kinds["cache"] | kinds["cache_private"]
                                                                            | kinds["user"])

        # The others, in pfn order: each may exclude a block (a buddy page and its 2^order pages, a
        # compound page and its tails) that takes precedence over what its pages are alone.
        counts = dict.fromkeys(self.stats, 0)
        covered = bytearray(npages)
        covered_until = 0
        for match in _ONE.finditer(one_by_one.to_bytes(npages, "big")):
            i = match.start()
            if i < covered_until:
                continue
            page = page_fmt.unpack_from(blob, i * ps)
            flags, mapping = page[i_flags], page[i_map]
            mapcount = page[i_mc] if i_mc is not None else 0
            if want_free and is_buddy(mapcount):
                order = page[i_priv] if i_priv is not None else 0
                n = 1 << order if order < MAX_BUDDY_ORDER else 1
                n = min(n, pps - i)
                kind = "free"
            else:
                anon_page = (bool(mapping & PAGE_MAPPING_ANON) and not flags & slab
                             and not is_slab_type(mapcount))
                cache_page = (bool(flags & lru)
                              or bool(flags & swapcache and (not swapbacked or flags & swapbacked)))
                if want_cache and cache_page and not flags & private and not anon_page:
                    kind = "cache"
                elif want_cache_pri and cache_page and not anon_page:
                    kind = "cache_private"
                elif want_user and (anon_page or self._hugetlb(blob, i, flags, npages)
                                    or (flags & head_mask and is_hugetlb_type(mapcount))):
                    kind = "user"
                elif hwpoison and flags & hwpoison:
                    kind = "hwpoison"
                elif is_offline(mapcount):
                    kind = "offline"
                else:
                    continue
                n = 1
                if head_mask and flags & head_mask and kind in ("cache", "cache_private", "user"):
                    n = min(1 << self._order(npages, i, blob), pps - i)
            counts[kind] += n
            covered[i:i + n] = b"\x01" * n
            covered_until = i + n
        blocks = int.from_bytes(covered, "big")
        out = blocks
        for kind, pages in kinds.items():
            pages &= ~blocks
            counts[kind] += pages.bit_count()
            out |= pages
        for kind, n in counts.items():
            self.stats[kind] += n
        return out.to_bytes(npages, "big") if out else None

    def _free_pages(self, vec: _PageVectors) -> int:
        """Buddy pages of one page (order 0 or not a possible order: see _section's rule)."""
        o_mapcount, o_private = self.off["_mapcount"], self.off["private"]
        buddy = vec.masked_equal(o_mapcount, 4, *page_type_match(self.buddy_value))
        if o_private is None:
            return buddy
        # order 0 or >= MAX_BUDDY_ORDER: the low byte not in 1..MAX-1, or any other byte set
        one_page = vec.ones & ~vec.byte_in(o_private, 1, MAX_BUDDY_ORDER - 1)
        one_page |= vec.bits(o_private + 1, 7, (1 << 56) - 1)
        return buddy & one_page

    def _order(self, npages: int, i: int, blob: bytes) -> int:
        if i + 1 >= npages:
            return 0
        if self.o_compound_order is not None:
            order = blob[(i + 1) * self.page_struct + self.o_compound_order]
        elif self.order_in_flags_1:
            order = blob[(i + 1) * self.page_struct + self.off["flags"]]     # little-endian: the low byte
        else:
            return 0
        # a folio is aligned to its size: an order the pfn is not aligned to is not one (makedumpfile's check)
        return order if order < 20 and (i & ((1 << order) - 1)) == 0 else 0

    def _hugetlb(self, blob: bytes, i: int, flags: int, npages: int) -> bool:
        if not self.head_mask or not flags & self.head_mask or i + 1 >= npages:
            return False
        tail = (i + 1) * self.page_struct        # the first tail page, the struct page of pfn + 1
        if self.pg_hugetlb is not None:
            tail_flags = int.from_bytes(blob[tail + self.off["flags"]:tail + self.off["flags"] + 8], "little")
            return bool(tail_flags >> self.pg_hugetlb & 1)
        if self.hugetlb_dtor is None or self.o_compound_dtor is None:
            return False
        # compound_dtor (a byte) lives in the first tail page
        return blob[tail + self.o_compound_dtor] == self.hugetlb_dtor
