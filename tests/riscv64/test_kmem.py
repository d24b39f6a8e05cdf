"""riscv64 kernel-address translation: the VMCOREINFO rules of the real 6.12 guest and Sv39/Sv48/Sv57
page-table walks over tables built here from the privileged spec's PTE format."""
from __future__ import annotations

import pytest

from kexecfw.errors import BadInputError
from kexecfw.plugins.riscv64.translate import Riscv64Translator
from kexecfw.vmcore.kmem import KernelMemory, TranslationError, translator_for
from kexecfw.vmcoreinfo import VmcoreInfo
from tests.vmcore.test_arm64_walk import PageDump

# the guest's VMCOREINFO (tests/data/riscv64-guest/snapshot/proc/kcore), Sv57
GUEST = {"PAGE_OFFSET": 0xFF60000000000000, "VA_BITS": 57, "phys_ram_base": 2147483648,
         "va_kernel_pa_offset": 0xFFFFFFFEFFE00000, "KERNEL_LINK_ADDR": 0xFFFFFFFF80000000}
PAGE_OFFSETS = {39: 0xFFFFFFD600000000, 48: 0xFFFFAF8000000000, 57: 0xFF60000000000000}
V, R, W, X = 1, 2, 4, 8


def info_text(va_bits: int = 57, swapper: int = 0xFFFFFFFF81DCB000, **override: int | str) -> str:
    numbers = {**GUEST, "VA_BITS": va_bits, "PAGE_OFFSET": PAGE_OFFSETS[va_bits], **override}
    lines = ["PAGESIZE=4096", f"SYMBOL(swapper_pg_dir)={swapper:x}"]
    for key, value in numbers.items():
        text = value if isinstance(value, str) else (str(value) if key in ("VA_BITS", "phys_ram_base") else hex(value))
        lines.append(f"NUMBER({key})={text}")
    return "\n".join(lines) + "\n"


class RiscvPageDump(PageDump):
    machine = 243


def test_guest_rules():
    t = translator_for(243, VmcoreInfo.parse(info_text()))
    assert isinstance(t, Riscv64Translator) and t.levels == 5
    assert t.linear(0xFF6000003DC00000) == 0x80000000 + 0x3DC00000        # SYMBOL(mem_section)
    assert t.linear(0xFFFFFFFF80002000) == 0x80202000                      # _text: iomem "Kernel image"
    assert t.top_table == 0xFFFFFFFF81DCB000 - GUEST["va_kernel_pa_offset"]
    assert t.linear(0xFFFFFFFF01E6C000) is None                            # MODULES_VADDR: walked


def pte(paddr: int, flags: int) -> int:
    return ((paddr >> 12) << 10) | flags


def put(pages: dict[int, bytearray], table: int, index: int, entry: int) -> None:
    pages.setdefault(table, bytearray(4096))[index * 8:index * 8 + 8] = entry.to_bytes(8, "little")


@pytest.mark.parametrize("va_bits", [39, 48, 57])
def test_walk(va_bits):
    levels = (va_bits - 12) // 9
    swapper_pa = 0x81DCB000
    swapper_va = swapper_pa + GUEST["va_kernel_pa_offset"] & ((1 << 64) - 1)
    pages: dict[int, bytearray] = {}
    vaddr = 0xFFFFFFFF01E6C123            # a module address: below KERNEL_LINK_ADDR, outside the linear map
    table, next_table = swapper_pa, 0x90000000
    for level in range(levels - 1, 0, -1):
        pages.setdefault(table, bytearray(4096))
        index = (vaddr >> (12 + 9 * level)) & 0x1FF
        pages[table][index * 8:index * 8 + 8] = pte(next_table, V).to_bytes(8, "little")
        table, next_table = next_table, next_table + 0x1000
    pages.setdefault(table, bytearray(4096))
    index = (vaddr >> 12) & 0x1FF
    # PBMT bits (61-62) set on the leaf must not leak into the address
    pages[table][index * 8:index * 8 + 8] = (pte(0xA1234000, V | R | W) | (1 << 61)).to_bytes(8, "little")
    mem = KernelMemory(RiscvPageDump(pages, 4096, info_text(va_bits, swapper_va)))
    assert mem.vtop(vaddr) == 0xA1234123


def test_superpage_and_napot():
    pages = {0x81DCB000: bytearray(4096), 0x90000000: bytearray(4096)}
    swapper_va = 0x81DCB000 + GUEST["va_kernel_pa_offset"] & ((1 << 64) - 1)
    info = info_text(39, swapper_va)
    mem = KernelMemory(RiscvPageDump(pages, 4096, info))
    t = mem.arch
    giga = 0xFFFFFFC000000000 + (5 << 30) + 0x12345                # vmalloc area of Sv39, a 1 GiB leaf
    put(pages, 0x81DCB000, (giga >> 30) & 0x1FF, pte(0x40000000, V | R | W))
    assert t.walk_block(mem, giga) == (0x40012345, 1 << 30)
    small = 0xFFFFFFC000000000 + (6 << 30) + 0x5000 + 0x42           # a 64 KiB Svnapot leaf at level 0
    put(pages, 0x81DCB000, (small >> 30) & 0x1FF, pte(0x90000000, V))
    put(pages, 0x90000000, (small >> 21) & 0x1FF, pte(0x91000000, V))
    napot = (((0xB0010000 >> 12) | 0b1000) << 10) | V | R | (1 << 63)    # PPN[3:0] = 1000: 64 KiB
    put(pages, 0x91000000, (small >> 12) & 0x1FF, napot)
    assert t.walk_block(mem, small) == (0xB0015042, 1 << 16)
    unmapped = 0xFFFFFFC000000000 + (7 << 30)
    with pytest.raises(TranslationError, match="not mapped"):
        t.walk_block(mem, unmapped)


@pytest.mark.parametrize("key,value,words", [
    ("VA_BITS", "40", "none of Sv39/Sv48/Sv57"),
    ("VA_BITS", "64", r"NUMBER\(VA_BITS\)=64 is not plausible"),
    ("phys_ram_base", str(1 << 60), r"NUMBER\(phys_ram_base\)=\d+ is not plausible"),
    ("PAGE_OFFSET", "zz", "is not a number"),
])
def test_vmcoreinfo_bounds(key, value, words):
    text = info_text(57, **{key: value})
    with pytest.raises(BadInputError, match=words):
        Riscv64Translator(VmcoreInfo.parse(text))
