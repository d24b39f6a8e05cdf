"""arm64 kernel virtual addresses in a dump: the linear map and the kernel image by VMCOREINFO numbers,
the rest by a walk of swapper_pg_dir."""
from __future__ import annotations

from kexecfw.plugins.arm64.capture import ARM64_MAX_VA_BITS, ARM64_MIN_VA_BITS
from kexecfw.vmcore.bounds import EM_AARCH64
from kexecfw.vmcore.kmem import MASK64, KernelMemory, TranslationError, Translator, checked_info


class Arm64Translator(Translator):
    """arm64: linear map and kernel image by VMCOREINFO numbers, the rest by a walk of swapper_pg_dir.

    Descriptor format: arch/arm64/include/asm/pgtable-hwdef.h. Bit 0 valid, bit 1
    table (levels above the last) or page (last level); a block otherwise.
    Output address: bits [47:PAGE_SHIFT]; with 64K pages and 52-bit PA, PA[51:48]
    sit in bits [15:12]; with LPA2 (4K/16K pages, 52-bit VA, 6.9+) the address is
    bits [49:PAGE_SHIFT] and PA[51:50] sit in bits [9:8].
    """

    def __init__(self, info) -> None:
        c = checked_info(info, EM_AARCH64)
        self.page_size = c.page_size
        self.page_shift = c.page_shift
        self.va_bits = c.number("VA_BITS", ARM64_MIN_VA_BITS, ARM64_MAX_VA_BITS) or 48
        # TCR_EL1.T1SZ = 64 - the VA bits the hardware gives (fewer than VA_BITS: a 52-bit kernel on 48-bit CPUs)
        t1sz = c.number("TCR_EL1_T1SZ", 64 - self.va_bits, 64 - ARM64_MIN_VA_BITS)
        self.va_bits_actual = 64 - t1sz if t1sz else self.va_bits
        self.phys_offset = c.u64("PHYS_OFFSET") or 0      # negative (as u64) when it absorbs a VA difference
        self.kimage_voffset = c.u64("kimage_voffset")
        self.page_offset = (-(1 << self.va_bits)) & MASK64
        va_bits_min = 48 if self.va_bits > 48 else self.va_bits
        self.page_end = (-(1 << (va_bits_min - 1))) & MASK64
        self.top_vaddr = c.symbol("swapper_pg_dir")
        self.lpa2 = self.page_size != 65536 and self.va_bits_actual == 52
        bits_per_level = self.page_shift - 3
        self.levels = -(-(self.va_bits_actual - self.page_shift) // bits_per_level)
        self.bits_per_level = bits_per_level
        # Kernel image bounds are not in VMCOREINFO; the image starts a little below _stext.
        self.image_start = ((c.symbol("_stext") or 0) & ~((2 << 20) - 1)) - (2 << 20)

    @property
    def phys_base(self) -> int:
        return self.phys_offset

    def direct_map_base(self, mem: KernelMemory) -> int | None:
        return (self.page_offset - self.phys_offset) & MASK64

    def linear(self, vaddr: int) -> int | None:
        if self.page_offset <= vaddr < self.page_end:
            return ((vaddr - self.page_offset) + self.phys_offset) & MASK64
        return None

    def image(self, vaddr: int) -> int | None:
        if self.kimage_voffset is not None and vaddr >= self.image_start and vaddr >= self.page_end:
            return (vaddr - self.kimage_voffset) & MASK64
        return None

    def _output_address(self, desc: int, block_shift: int) -> int:
        mask = ((1 << 48) - 1) & ~((1 << block_shift) - 1)
        if self.lpa2:
            mask = ((1 << 50) - 1) & ~((1 << block_shift) - 1)
            return (desc & mask) | (((desc >> 8) & 0x3) << 50)
        addr = desc & mask
        if self.page_size == 65536:
            addr |= ((desc >> 12) & 0xF) << 48
        return addr

    def walk_block(self, mem: KernelMemory, vaddr: int) -> tuple[int, int]:
        if self.top_vaddr is None:
            raise TranslationError("VMCOREINFO lacks SYMBOL(swapper_pg_dir): cannot walk page tables")
        table = self.image(self.top_vaddr)
        if table is None:
            raise TranslationError("VMCOREINFO lacks NUMBER(kimage_voffset): cannot find swapper_pg_dir")
        shift = self.page_shift + self.bits_per_level * (self.levels - 1)
        for level in range(self.levels):
            last = level == self.levels - 1
            bits = self.va_bits_actual - shift if level == 0 else self.bits_per_level
            index = (vaddr >> shift) & ((1 << bits) - 1)
            desc = mem.read_phys_u64(table + index * 8, f"page table of {vaddr:#x}")
            if not desc & 1:
                raise TranslationError(f"kernel address {vaddr:#x} is not mapped (invalid descriptor "
                                       f"at level {level})")
            if last or not desc & 2:
                out = self._output_address(desc, shift)
                return out | (vaddr & ((1 << shift) - 1)), 1 << shift
            table = self._output_address(desc, self.page_shift)
            shift -= self.bits_per_level
        raise TranslationError(f"kernel address {vaddr:#x}: page-table walk did not end")
