"""Kernel virtual memory of a dump: virtual-to-physical translation from VMCOREINFO and page tables.

Order of translation for a kernel virtual address:

1. the dump's own (vaddr, paddr) pairs (ELF PT_LOADs carry both; exact by construction);
2. the architecture's linear rules that need no memory reads: the direct map
   (arm64: ``(va - PAGE_OFFSET) + PHYS_OFFSET``) and the kernel image
   (x86_64: ``va - __START_KERNEL_map + phys_base``; arm64: ``va - kimage_voffset``);
3. a walk of the kernel's page tables (``init_top_pgt`` on x86_64 with 4 or 5
   levels; ``swapper_pg_dir`` on arm64 for 4K/16K/64K granules, 48- and 52-bit
   VA including LPA2 descriptors; ``swapper_pg_dir`` on riscv64 for Sv39/Sv48/Sv57), for
   vmalloc, vmemmap and (x86_64) a KASLR'd direct map.

Only VMCOREINFO is used: no vmlinux, no debug info.
"""
from __future__ import annotations

import bisect
import struct

from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import (ARM64_MAX_VA_BITS, ARM64_MIN_VA_BITS, EM_AARCH64, EM_RISCV, EM_X86_64,
                                   MAX_STRUCT_SIZE, CheckedInfo)
from kexecfw.vmcore.dumpfile import DumpFile, MemoryMissing

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
# Translations kept (page -> physical page), ~150 bytes each. Readers of kernel structures revisit
# a few hundred pages; a -d 31 save reads each page of mem_map once (8192 per GiB of RAM), so a
# larger cache would only make memory grow with the crashed machine's size.
VTOP_CACHE_PAGES = 4096
# A walk that ends at a block (2 MiB or 1 GiB on x86_64) translates its neighbours as well: up to this
# many pages around the address are cached from it. vmemmap is mapped with 2 MiB blocks, and a -d 31
# save reads mem_map a section (2 MiB) at a time: one walk instead of 512.
VTOP_BLOCK_FILL_PAGES = 512
U16 = struct.Struct("<H")
MASK64 = (1 << 64) - 1
READ_RUN_BYTES = 16 << 20
# struct new_utsname (include/uapi/linux/utsname.h): six fields of __NEW_UTS_LEN + 1 bytes
UTS_FIELD = 65
UTS_NAMES = ("sysname", "nodename", "release", "version", "machine", "domainname")
# The largest kernel image a layout is drawn with (x86_64's KERNEL_IMAGE_SIZE is at most 1 GiB; arm64's
# images are tens of MiB); a kallsyms _end further away is corrupt and the 64 MiB default is used.
MAX_KERNEL_IMAGE = 1 << 30


def checked_info(info, machine: int) -> CheckedInfo:
    """``info`` as a CheckedInfo of ``machine`` (translators are also built from a bare VmcoreInfo)."""
    return info if isinstance(info, CheckedInfo) else CheckedInfo(info, machine)


class TranslationError(BadInputError):
    """A kernel virtual address that no rule and no page table maps."""


class Translator:
    """Architecture rules; ``walk`` reads page tables through ``read_phys``."""

    page_size = 4096

    def linear(self, vaddr: int) -> int | None:
        return None

    def walk(self, mem: "KernelMemory", vaddr: int) -> int:
        return self.walk_block(mem, vaddr)[0]

    def walk_block(self, mem: "KernelMemory", vaddr: int) -> tuple[int, int]:
        """The physical address of ``vaddr`` and the size of the mapping it lies in (a page, or a
        larger block mapped at a higher level: all of it translates linearly)."""
        raise TranslationError(f"no page-table walker for this architecture (address {vaddr:#x})")


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

    def linear(self, vaddr: int) -> int | None:
        if self.START_KERNEL_MAP <= vaddr < self.START_KERNEL_MAP + self.image_size:
            return vaddr - self.START_KERNEL_MAP + self.phys_base
        return None

    def walk_block(self, mem: "KernelMemory", vaddr: int) -> tuple[int, int]:
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

    def walk_block(self, mem: "KernelMemory", vaddr: int) -> tuple[int, int]:
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

    def image(self, vaddr: int) -> int | None:
        if (self.va_kernel_pa_offset is None or self.kernel_link_addr is None
                or vaddr < self.kernel_link_addr):
            return None
        return (vaddr - self.va_kernel_pa_offset) & MASK64

    def linear(self, vaddr: int) -> int | None:
        if self.page_offset is not None and self.page_offset <= vaddr < self.page_offset + self.linear_size:
            return (vaddr - self.page_offset + self.phys_ram_base) & MASK64
        return self.image(vaddr)

    def walk_block(self, mem: "KernelMemory", vaddr: int) -> tuple[int, int]:
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


def translator_for(machine: int, info) -> Translator:
    if machine == EM_X86_64:
        return X86_64Translator(info)
    if machine == EM_AARCH64:
        return Arm64Translator(info)
    if machine == EM_RISCV:
        return Riscv64Translator(info)
    return Translator()


class KernelMemory:
    """Read the crashed kernel's memory by kernel virtual address."""

    def __init__(self, dump: DumpFile) -> None:
        self.dump = dump
        self.info = dump.vmcoreinfo
        # every reader of kernel structures takes its VMCOREINFO numbers from here, checked
        self.checked = CheckedInfo(self.info, dump.machine, dump.page_size)
        self.page_size = self.checked.page_size
        self.arch = translator_for(dump.machine, self.checked)
        self._memory_bytes: int | None = None
        segs = getattr(dump, "virtual_segments", None)
        self._vsegs = sorted(segs()) if segs else []
        self._vstarts = [v for v, _, _ in self._vsegs]
        self._cache: dict[int, int] = {}

    @property
    def memory_bytes(self) -> int:
        """The span of physical memory the dump describes: no kernel structure is larger."""
        if self._memory_bytes is None:
            self._memory_bytes = self.dump.max_pfn() * self.page_size
        return self._memory_bytes

    # --- physical ------------------------------------------------------------------------
    def read_phys(self, paddr: int, size: int) -> bytes:
        return self.dump.read_phys(paddr, size)

    def read_phys_u64(self, paddr: int, what: str = "") -> int:
        try:
            return U64.unpack(self.dump.read_phys(paddr, 8))[0]
        except MemoryMissing:
            raise MemoryMissing(paddr, what) from None

    # --- virtual -------------------------------------------------------------------------
    def vtop(self, vaddr: int) -> int:
        """Physical address of kernel virtual ``vaddr``."""
        page = vaddr & ~(self.page_size - 1)
        hit = self._cache.get(page)
        if hit is not None:
            return hit | (vaddr & (self.page_size - 1))
        paddr, block = self._translate_block(page)
        if len(self._cache) > VTOP_CACHE_PAGES:
            self._cache.clear()
        if block > self.page_size:
            # the aligned window around page lies inside the (aligned) block, which maps linearly
            window = min(block, VTOP_BLOCK_FILL_PAGES * self.page_size)
            first = page & ~(window - 1)
            delta = paddr - page
            for p in range(first, first + window, self.page_size):
                self._cache[p] = p + delta
        else:
            self._cache[page] = paddr
        return paddr | (vaddr & (self.page_size - 1))

    def _translate_block(self, vaddr: int) -> tuple[int, int]:
        """Physical address of ``vaddr`` and the size of the block of the page tables it lies in
        (the page size for other rules)."""
        if self._vsegs:
            if len(self._vstarts) != len(self._vsegs):       # _vsegs replaced (tests switch it off)
                self._vstarts = [v for v, _, _ in self._vsegs]
            i = bisect.bisect_right(self._vstarts, vaddr) - 1
            if i >= 0:
                v, p, size = self._vsegs[i]
                if vaddr < v + size:
                    return p + (vaddr - v), self.page_size
        paddr = self.arch.linear(vaddr)
        if paddr is not None:
            return paddr, self.page_size
        try:
            return self.arch.walk_block(self, vaddr)
        except MemoryMissing:
            image = getattr(self.arch, "image", None)
            paddr = image(vaddr) if image else None
            if paddr is None:
                raise TranslationError(f"cannot translate kernel address {vaddr:#x}: the page tables "
                                       "are not in the dump") from None
            return paddr, self.page_size

    def read(self, vaddr: int, size: int, excluded_as_zero: bool = False) -> bytes:
        """``size`` bytes at kernel virtual ``vaddr``.

        ``excluded_as_zero``: pages the dump level filtered out read as zeros. Right for
        static kernel arrays such as the printk ring (never cache, user or free memory,
        so only ever excluded for being zero); wrong in general, hence off by default.
        """
        if not 0 < size <= self.memory_bytes:
            if size == 0:
                return b""
            raise BadInputError(f"a read of {size} bytes at kernel address {vaddr:#x} is not plausible (the dump "
                                f"describes {self.memory_bytes} bytes of memory): a size read from the dump is corrupt")
        chunks = []
        while size > 0:
            paddr = self.vtop(vaddr)
            n = min(size, self.page_size - (vaddr & (self.page_size - 1)))
            # Physically contiguous pages are one read of the dump, not one per page: the printk
            # ring is hundreds of pages, and per-page reads were most of `vmcore dmesg`'s work.
            # A run ends at READ_RUN_BYTES, so that memory the dump lacks fails the read after that
            # many pages translated, not after all of a corrupt size (the linear map translates anything).
            while n < size and n < READ_RUN_BYTES:
                try:
                    if self.vtop(vaddr + n) != paddr + n:
                        break
                except BadInputError:
                    break      # raised by the next round, once the pages before it are read
                n += min(size - n, self.page_size)
            chunks.append(self._read_run(paddr, n, excluded_as_zero))
            vaddr += n
            size -= n
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _read_run(self, paddr: int, size: int, excluded_as_zero: bool) -> bytes:
        try:
            return self.dump.read_phys(paddr, size)
        except MemoryMissing:
            if not excluded_as_zero:
                raise
        # Some page of the run is missing: page by page, the excluded ones as zeros.
        out = bytearray()
        while size > 0:
            n = min(size, self.page_size - (paddr & (self.page_size - 1)))
            try:
                out += self.dump.read_phys(paddr, n)
            except MemoryMissing as e:
                if not e.excluded:
                    raise
                out += bytes(n)
            paddr += n
            size -= n
        return bytes(out)

    def read_u64(self, vaddr: int) -> int:
        return U64.unpack(self.read(vaddr, 8))[0]

    def read_u32(self, vaddr: int) -> int:
        return U32.unpack(self.read(vaddr, 4))[0]

    def read_cstring(self, vaddr: int, limit: int) -> str:
        raw = self.read(vaddr, limit)
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def utsname(self) -> dict[str, str]:
        """init_uts_ns.name: the crashed kernel's struct new_utsname (6 fields of 65 bytes)."""
        raw = self.utsname_raw()
        return {n: raw[i * UTS_FIELD:(i + 1) * UTS_FIELD].split(b"\0", 1)[0].decode("utf-8", "replace")
                for i, n in enumerate(UTS_NAMES)}

    def utsname_raw(self) -> bytes:
        size = len(UTS_NAMES) * UTS_FIELD
        base = self.checked.need_symbol("init_uts_ns")
        offset = self.checked.offset("uts_namespace.name", MAX_STRUCT_SIZE, size) or 0
        return self.read((base + offset) & MASK64, size)


def kernel_layout(mem: KernelMemory) -> dict:
    """Where the crashed kernel mapped things, for writing ELF program headers like /proc/vmcore's.

    ``page_offset``: virtual address of physical 0 in the direct map (arm64: from
    PAGE_OFFSET and PHYS_OFFSET; x86_64: the KASLR'd page_offset_base, found by translating
    a direct-map pointer VMCOREINFO gives, SYMBOL(mem_section), through the page tables).
    ``image``: (virtual start, physical start, size) of the kernel image, from kallsyms
    ``_text``/``_end`` when the dump has them, else from ``_stext`` (64 MiB assumed).
    Missing facts are None.
    """
    info = mem.checked
    out: dict = {"page_offset": None, "image": None}
    arch = mem.arch
    if isinstance(arch, Arm64Translator):
        out["page_offset"] = (arch.page_offset - arch.phys_offset) & MASK64
    elif isinstance(arch, Riscv64Translator) and arch.page_offset is not None:
        out["page_offset"] = (arch.page_offset - arch.phys_ram_base) & MASK64
    elif isinstance(arch, X86_64Translator):
        probe = info.symbol("mem_section")
        if probe is not None and probe < arch.START_KERNEL_MAP:
            try:
                out["page_offset"] = (probe - mem.vtop(probe)) & ~((1 << 30) - 1) & MASK64
            except BadInputError:
                pass
    start = info.symbol("_stext")
    end = None
    try:
        from kexecfw.vmcore import kallsyms
        ks = kallsyms.load(mem)
        if ks is not None:
            start = ks.address("_text") or start
            end = ks.address("_end")
    except BadInputError:
        pass
    if start is not None:
        size = (end - start) if end and start < end <= start + MAX_KERNEL_IMAGE else (64 << 20)
        try:
            out["image"] = (start, mem.vtop(start), size)
        except BadInputError:
            pass
    return out
