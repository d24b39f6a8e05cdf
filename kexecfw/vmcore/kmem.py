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

Only VMCOREINFO is used: no vmlinux, no debug info. The rules of 2 and 3 are each architecture's:
its plugin's translate module, found through :mod:`kexecfw.machines` (no plugin manager).
"""
from __future__ import annotations

import bisect
import struct

from kexecfw.errors import BadInputError
# EM_X86_64: tests/vmcore/test_lab_dumps.py imports it from here (the machine numbers live in bounds)
from kexecfw.vmcore.bounds import EM_X86_64, MAX_STRUCT_SIZE, CheckedInfo  # noqa: F401
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
    """An architecture's rules (its plugin's translate module); ``walk`` reads page tables through ``read_phys``."""

    page_size = 4096
    phys_base = 0           # what the kdump sub-header's phys_base holds (the kernel image's physical offset)

    def linear(self, vaddr: int) -> int | None:
        return None

    def walk(self, mem: "KernelMemory", vaddr: int) -> int:
        return self.walk_block(mem, vaddr)[0]

    def walk_block(self, mem: "KernelMemory", vaddr: int) -> tuple[int, int]:
        """The physical address of ``vaddr`` and the size of the mapping it lies in (a page, or a
        larger block mapped at a higher level: all of it translates linearly)."""
        raise TranslationError(f"no page-table walker for this architecture (address {vaddr:#x})")

    def direct_map_base(self, mem: "KernelMemory") -> int | None:
        """The virtual address of physical 0 in the direct map, None when unknown."""
        return None


def translator_for(machine: int, info) -> Translator:
    """The translator of ELF ``machine`` (its plugin's ``capture.CAPTURE.translator``); one that knows no
    rule for a machine no installed plugin describes."""
    from kexecfw.machines import machine_capture
    capture = machine_capture(machine)
    return capture.translator(checked_info(info, machine)) if capture is not None else Translator()


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

    ``page_offset``: virtual address of physical 0 in the direct map (the architecture's
    translator finds it: arm64 from PAGE_OFFSET and PHYS_OFFSET, x86_64 the KASLR'd
    page_offset_base by translating a direct-map pointer).
    ``image``: (virtual start, physical start, size) of the kernel image, from kallsyms
    ``_text``/``_end`` when the dump has them, else from ``_stext`` (64 MiB assumed).
    Missing facts are None.
    """
    info = mem.checked
    out: dict = {"page_offset": mem.arch.direct_map_base(mem), "image": None}
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
