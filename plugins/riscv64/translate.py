"""riscv64 kernel virtual addresses in a dump: the linear map and the kernel image by VMCOREINFO numbers,
the rest by a walk of swapper_pg_dir (Sv39/Sv48/Sv57)."""
from __future__ import annotations

from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import EM_RISCV
from kexecfw.vmcore.kmem import MASK64, KernelMemory, TranslationError, Translator, checked_info


class Riscv64Translator(Translator):
    """riscv64: linear map and kernel image by VMCOREINFO numbers, the rest by a walk of swapper_pg_dir.

    arch/riscv/kernel/vmcore_info.c: NUMBER(PAGE_OFFSET), NUMBER(VA_BITS) (39/48/57: Sv39/Sv48/Sv57,
    3 to 5 levels of 512 entries), NUMBER(phys_ram_base) (decimal), NUMBER(va_kernel_pa_offset),
    NUMBER(KERNEL_LINK_ADDR). arch/riscv/include/asm/page.h: linear map
    ``pa = va - PAGE_OFFSET + phys_ram_base`` over KERN_VIRT_SIZE = 2^(VA_BITS-2) bytes; kernel image
    (at and above KERNEL_LINK_ADDR; modules and BPF sit below it) ``pa = va - va_kernel_pa_offset``.
    PTE (privileged spec, Sv39): V bit 0; a leaf iff any of R/W/X (bits 1-3) is set, at any level (a
    superpage above level 0); PPN in bits 10-53; Svnapot's N (bit 63) marks a 64 KiB level-0 leaf whose
    PPN's low 4 bits are the size code, not address bits.
    """

    SV_MODES = (39, 48, 57)
    VALID = 1 << 0
    LEAF = 0b1110            # R | W | X
    NAPOT = 1 << 63
    NAPOT_64K = 1 << 16

    def __init__(self, info) -> None:
        c = checked_info(info, EM_RISCV)
        self.va_bits = c.number("VA_BITS", min(self.SV_MODES), max(self.SV_MODES)) or 39
        if self.va_bits not in self.SV_MODES:
            raise BadInputError(f"VMCOREINFO NUMBER(VA_BITS)={self.va_bits} is none of Sv39/Sv48/Sv57's "
                                "39, 48, 57: the dump is corrupt")
        self.levels = (self.va_bits - 12) // 9
        self.page_offset = c.u64("PAGE_OFFSET")
        self.phys_ram_base = c.phys("phys_ram_base") or 0
        self.va_kernel_pa_offset = c.u64("va_kernel_pa_offset")
        self.kernel_link_addr = c.u64("KERNEL_LINK_ADDR")
        self.linear_size = 1 << (self.va_bits - 2)
        self.top_vaddr = c.symbol("swapper_pg_dir")
        self.top_table = None if self.top_vaddr is None else self.image(self.top_vaddr)
        if self.top_vaddr is not None and self.top_table is None and self.va_kernel_pa_offset is not None:
            raise BadInputError(f"VMCOREINFO SYMBOL(swapper_pg_dir)={self.top_vaddr:#x} is not in the kernel "
                                f"image (from KERNEL_LINK_ADDR {self.kernel_link_addr or 0:#x}): the dump is corrupt")

    @property
    def phys_base(self) -> int:
        return self.phys_ram_base       # makedumpfile reads mem_section through it

    def direct_map_base(self, mem: KernelMemory) -> int | None:
        return None if self.page_offset is None else (self.page_offset - self.phys_ram_base) & MASK64

    def image(self, vaddr: int) -> int | None:
        if (self.va_kernel_pa_offset is None or self.kernel_link_addr is None
                or vaddr < self.kernel_link_addr):
            return None
        return (vaddr - self.va_kernel_pa_offset) & MASK64

    def linear(self, vaddr: int) -> int | None:
        if self.page_offset is not None and self.page_offset <= vaddr < self.page_offset + self.linear_size:
            return (vaddr - self.page_offset + self.phys_ram_base) & MASK64
        return self.image(vaddr)

    def walk_block(self, mem: KernelMemory, vaddr: int) -> tuple[int, int]:
        table = self.top_table
        if table is None:
            raise TranslationError("VMCOREINFO lacks SYMBOL(swapper_pg_dir) or NUMBER(va_kernel_pa_offset): "
                                   "cannot walk page tables")
        for level in range(self.levels - 1, -1, -1):
            shift = 12 + 9 * level
            pte = mem.read_phys_u64(table + ((vaddr >> shift) & 0x1FF) * 8, f"level-{level} page table of {vaddr:#x}")
            if not pte & self.VALID:
                raise TranslationError(f"kernel address {vaddr:#x} is not mapped (level-{level} entry invalid)")
            base = ((pte >> 10) & ((1 << 44) - 1)) << 12
            if pte & self.LEAF:
                size = 1 << shift
                if level == 0 and pte & self.NAPOT:
                    size = self.NAPOT_64K
                return (base & ~(size - 1)) | (vaddr & (size - 1)), size
            table = base
        raise TranslationError(f"kernel address {vaddr:#x}: the level-0 entry is not a leaf (page tables corrupt)")
