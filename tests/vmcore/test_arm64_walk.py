"""arm64 page-table walks for the granule / VA-size combinations the kernel supports.

Tables are built here from the descriptor formats of the Arm ARM (VMSAv8-64): 4K/48-bit
(4 levels), 16K/47-bit, 64K/52-bit (3 levels, PA[51:48] in bits [15:12]) and 4K/52-bit
with LPA2 (5 levels, PA[51:50] in bits [9:8]) — the configuration of Debian 13's 6.12 kernel
that makedumpfile 1.7.2 refuses. The dump is a real DumpFile holding just those pages.
"""
from __future__ import annotations

import struct

import pytest

from kexecfw.plugins.arm64.translate import Arm64Translator
from kexecfw.vmcore.dumpfile import DumpFile, MemoryMissing, PhysRange
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcoreinfo import VmcoreInfo


class PageDump(DumpFile):
    """Physical memory made of the pages given (paddr -> bytes)."""

    format = "test"
    machine = 183

    def __init__(self, pages: dict[int, bytearray], page_size: int, info: str) -> None:
        self.pages, self.page_size, self.path, self.notes = pages, page_size, "pages", []
        self._vmcoreinfo = VmcoreInfo.parse(info)

    def read_phys(self, paddr: int, size: int) -> bytes:
        base = paddr - paddr % self.page_size
        if base not in self.pages:
            raise MemoryMissing(paddr)
        off = paddr - base
        return bytes(self.pages[base][off:off + size])

    def ranges(self) -> list[PhysRange]:
        return [PhysRange(p, p + self.page_size) for p in sorted(self.pages)]


def encode(addr: int, page_size: int, lpa2: bool) -> int:
    if lpa2:
        return (addr & ((1 << 50) - 1)) | ((addr >> 50) & 3) << 8
    if page_size == 65536:
        return (addr & ((1 << 48) - 1)) | ((addr >> 48) & 0xF) << 12
    return addr


CASES = [  # page size, VA bits, levels, LPA2, physical address width
    (4096, 48, 4, False, 48),
    (16384, 47, 3, False, 48),
    (65536, 52, 3, False, 52),
    (4096, 52, 5, True, 52),
]


@pytest.mark.parametrize("page_size,va_bits,levels,lpa2,pa_bits", CASES)
def test_walk(page_size, va_bits, levels, lpa2, pa_bits):
    shift = page_size.bit_length() - 1
    bpl = shift - 3
    pgd = 0x40000000
    va_bits_min = min(va_bits, 48)
    image_va = ((-(1 << (va_bits_min - 1))) & ((1 << 64) - 1)) + (1 << 28)   # above PAGE_END, like KIMAGE_VADDR
    kimage_voffset = image_va - pgd                      # swapper_pg_dir's VA maps to pgd
    swapper_va = pgd + kimage_voffset
    info = (f"PAGESIZE={page_size}\nNUMBER(VA_BITS)={va_bits}\nNUMBER(TCR_EL1_T1SZ)=0x{64 - va_bits:x}\n"
            f"NUMBER(kimage_voffset)=0x{kimage_voffset:x}\nNUMBER(PHYS_OFFSET)=0x40000000\n"
            f"SYMBOL(swapper_pg_dir)={swapper_va:x}\nSYMBOL(_stext)={swapper_va:x}\n")
    pages: dict[int, bytearray] = {pgd: bytearray(page_size)}
    next_table = [pgd + page_size]
    target_page = (1 << (pa_bits - 1)) + 7 * page_size          # above 48 bits when pa_bits is 52
    vaddr = (-(1 << va_bits) + (5 << (va_bits - 3)) + 123 * page_size + 0x10) & ((1 << 64) - 1)

    def table_entry(table: int, level_shift: int, bits: int, value: int) -> None:
        idx = (vaddr >> level_shift) & ((1 << bits) - 1)
        struct.pack_into("<Q", pages[table], idx * 8, value)

    table = pgd
    level_shift = shift + bpl * (levels - 1)
    for level in range(levels):
        bits = va_bits - level_shift if level == 0 else bpl
        if level == levels - 1:
            table_entry(table, level_shift, bits, encode(target_page, page_size, lpa2) | 0x3)
        else:
            new = next_table[0]
            next_table[0] += page_size
            pages[new] = bytearray(page_size)
            table_entry(table, level_shift, bits, encode(new, page_size, lpa2) | 0x3)
            table = new
        level_shift -= bpl
    dump = PageDump(pages, page_size, info)
    mem = KernelMemory(dump)
    assert isinstance(mem.arch, Arm64Translator)
    assert mem.arch.levels == levels and mem.arch.lpa2 == lpa2
    assert mem.arch.walk(mem, vaddr) == target_page + 0x10
    unmapped = vaddr ^ (1 << (va_bits - 2))
    with pytest.raises(Exception) as e:
        mem.arch.walk(mem, unmapped)
    assert "not mapped" in str(e.value)


def test_linear_map_52_bit_on_48_bit_hardware():
    """A 52-bit kernel on 48-bit hardware: PAGE_OFFSET is -(1 << 52) and PHYS_OFFSET is adjusted."""
    phys_offset = (0x40000000 - ((1 << 52) - (1 << 48))) & ((1 << 64) - 1)
    info = VmcoreInfo.parse(f"PAGESIZE=65536\nNUMBER(VA_BITS)=52\nNUMBER(TCR_EL1_T1SZ)=0x10\n"
                            f"NUMBER(PHYS_OFFSET)=0x{phys_offset:x}\n")
    t = Arm64Translator(info)
    assert t.va_bits_actual == 48
    assert t.linear(0xFFFF000000000000) == 0x40000000           # first byte of the 48-bit linear map
