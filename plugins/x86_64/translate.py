"""x86_64 kernel virtual addresses in a dump: the kernel image by phys_base, the rest by a page-table walk."""
from __future__ import annotations

from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import EM_X86_64
from kexecfw.vmcore.kmem import MASK64, KernelMemory, TranslationError, Translator, checked_info


class X86_64Translator(Translator):
    """x86_64: kernel image by phys_base, everything else by a 4- or 5-level page-table walk.

    Entry format: arch/x86/include/asm/pgtable_types.h (_PAGE_PRESENT bit 0,
    _PAGE_PSE bit 7 for 1 GiB / 2 MiB leaves; address bits 12..51; the SME
    C-bit is masked out with NUMBER(sme_mask)).
    """

    START_KERNEL_MAP = 0xFFFFFFFF80000000
    KERNEL_MAP_SIZE = 1 << 31           # __START_KERNEL_map to the top of the address space
    PRESENT = 1 << 0
    PSE = 1 << 7

    def __init__(self, info) -> None:
        c = checked_info(info, EM_X86_64)
        self.phys_base = c.phys_delta("phys_base") or 0
        self.image_size = c.number("KERNEL_IMAGE_SIZE", 1, self.KERNEL_MAP_SIZE) or (1 << 30)
        self.levels = 5 if c.number("pgtable_l5_enabled", 0, 1) else 4
        key = "init_top_pgt" if c.symbol("init_top_pgt") else "swapper_pg_dir"
        self.top_vaddr = c.symbol(key)
        # the top-level table is kernel image data: found by phys_base, never by a walk
        self.top_table = None if self.top_vaddr is None else self.linear(self.top_vaddr)
        if self.top_vaddr is not None and self.top_table is None:
            raise BadInputError(f"VMCOREINFO SYMBOL({key})={self.top_vaddr:#x} is not in the kernel image "
                                f"({self.START_KERNEL_MAP:#x} + KERNEL_IMAGE_SIZE {self.image_size:#x}): "
                                "the dump is corrupt")
        sme = c.phys("sme_mask") or 0       # the memory encryption bit of a page-table entry
        self.addr_mask = 0x000FFFFFFFFFF000 & ~sme

    def direct_map_base(self, mem: KernelMemory) -> int | None:
        """page_offset_base (KASLR'd): a direct-map pointer VMCOREINFO gives, SYMBOL(mem_section), translated
        through the page tables, less its offset in the 1 GiB the base is aligned to."""
        probe = mem.checked.symbol("mem_section")
        if probe is None or probe >= self.START_KERNEL_MAP:
            return None
        try:
            return (probe - mem.vtop(probe)) & ~((1 << 30) - 1) & MASK64
        except BadInputError:
            return None

    def linear(self, vaddr: int) -> int | None:
        if self.START_KERNEL_MAP <= vaddr < self.START_KERNEL_MAP + self.image_size:
            return vaddr - self.START_KERNEL_MAP + self.phys_base
        return None

    def walk_block(self, mem: KernelMemory, vaddr: int) -> tuple[int, int]:
        table = self.top_table
        if table is None:
            raise TranslationError("VMCOREINFO lacks SYMBOL(init_top_pgt): cannot walk page tables")
        shift = 48 if self.levels == 5 else 39
        for level in range(self.levels, 0, -1):
            index = (vaddr >> shift) & 0x1FF
            entry = mem.read_phys_u64(table + index * 8, f"level-{level} page table of {vaddr:#x}")
            if not entry & self.PRESENT:
                raise TranslationError(f"kernel address {vaddr:#x} is not mapped (level-{level} entry empty)")
            if level in (2, 3) and entry & self.PSE:
                size = 1 << shift
                return (entry & self.addr_mask & ~(size - 1)) | (vaddr & (size - 1)), size
            table = entry & self.addr_mask
            shift -= 9
        return table | (vaddr & 0xFFF), 4096
