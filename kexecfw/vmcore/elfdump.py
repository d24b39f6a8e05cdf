"""ELF crash dumps: /proc/vmcore in a capture kernel, and ELF dumps saved from it.

The file is read lazily (small reads through mmap windows, bulk reads with pread): only the
header, program headers and notes are parsed up front; memory is read on
demand through the PT_LOADs, looked up by physical address with a bisect over
the segments sorted by ``p_paddr``. Struct layouts are in :mod:`kexecfw.elfnotes`
(Elf64_Ehdr, Elf64_Phdr, Elf64_Nhdr from include/uapi/linux/elf.h).
"""
from __future__ import annotations

import bisect
import mmap
import os

from kexecfw.elfnotes import (ELF64_EHDR, ELF64_PHDR, PT_LOAD, PT_NOTE, ElfCoreHeader, ProgramHeader,
                              iter_notes, parse_elf_header)
from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import check_page_size, check_phys_end
from kexecfw.vmcore.dumpfile import DumpFile, MemoryMissing, PhysRange, summarize_ranges

PN_XNUM = 0xFFFF
# struct elf64_shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
# sh_addralign, sh_entsize (include/uapi/linux/elf.h); only section 0 matters (extended phnum).
ELF64_SHDR_INFO_OFFSET = 44
MAX_HEADER_BYTES = 64 << 20
BULK_READ = 64 << 10   # headers + notes of any real vmcore fit; guards against absurd e_phnum
# /proc/vmcore maps the old kernel's memory eagerly: mmap() builds the page table entries of the whole
# range at once (fs/proc/vmcore.c: mmap_vmcore -> remap_oldmem_pfn_range), so one mapping of the whole
# file would take page tables in proportion to the machine's memory (16 MiB for 8 GiB, 2 GiB for 1 TiB:
# more than a crash kernel has) and time to build and tear down. Small reads go through a few windows
# mapped on demand instead, as makedumpfile maps /proc/vmcore a window at a time; a window dropped is
# unmapped, which also bounds what mapped pages of a regular file add to the process's RSS.
MAP_WINDOW = 1 << 20
MAP_WINDOWS = 4
# An off_t is signed: a program header's offset or size from 2^63 up is no file position.
MAX_FILE_OFFSET = (1 << 63) - 1
# The writer keeps a bitmap of every page frame up to the highest PT_LOAD: it may take as many
# bytes as the file holds, or this floor (a sparse physical address space), never more.
MAX_SPARSE_BITMAP = 64 << 20


def _read_header(fd: int, size: int, path: str) -> tuple[ElfCoreHeader, bytes]:
    head = os.pread(fd, min(size, 1 << 16), 0)
    if len(head) < ELF64_EHDR.size:
        raise BadInputError(f"{path} is too short ({len(head)} bytes) to be an ELF dump")
    fields = ELF64_EHDR.unpack_from(head)
    if head[:4] == b"\x7fELF" and head[4] == 2:
        e_phoff, e_shoff, e_phnum = fields[5], fields[6], fields[10]
        if e_phnum == PN_XNUM and 0 < e_shoff <= size - ELF64_SHDR_INFO_OFFSET - 4:
            # More than 65534 program headers: the real count is section 0's sh_info.
            raw = os.pread(fd, 4, e_shoff + ELF64_SHDR_INFO_OFFSET)
            if len(raw) == 4:
                e_phnum = int.from_bytes(raw, "little")
                head = bytearray(head)
                ELF64_EHDR.pack_into(head, 0, *fields[:10], e_phnum & 0xFFFF, *fields[11:])
        need = e_phoff + e_phnum * ELF64_PHDR.size
        if need > MAX_HEADER_BYTES:
            raise BadInputError(f"{path}: {e_phnum} program headers at {e_phoff:#x} is not a plausible "
                                "vmcore header (corrupt ELF header?)")
        if need > len(head):
            head = bytes(head[:ELF64_EHDR.size]) + os.pread(fd, need - ELF64_EHDR.size, ELF64_EHDR.size)
            if fields[10] == PN_XNUM:
                head = bytearray(head)
                ELF64_EHDR.pack_into(head, 0, *fields[:10], 0, *fields[11:])
        if fields[10] == PN_XNUM:
            # parse_elf_header takes e_phnum from the header: decode the phdrs here instead.
            phdrs = []
            for i in range(e_phnum):
                at = e_phoff + i * ELF64_PHDR.size
                if at + ELF64_PHDR.size > len(head):
                    raise BadInputError(f"{path} is truncated inside its program headers")
                phdrs.append(ProgramHeader(*ELF64_PHDR.unpack_from(head, at)))
            return ElfCoreHeader(fields[2], fields[1], tuple(phdrs)), bytes(head)
    return parse_elf_header(bytes(head), path), bytes(head)


class ElfDump(DumpFile):
    """An ELF64 little-endian core with PT_LOADs (physical addresses in ``p_paddr``)."""

    format = "elf"

    def __init__(self, path: str, page_size: int | None = None) -> None:
        self._attach(path, lambda: self._open(page_size))

    def _open(self, page_size: int | None) -> None:
        st = os.fstat(self._fd)
        self.size = st.st_size
        header, _ = _read_header(self._fd, self.size, self.path)
        self.header = header
        self.machine = header.machine
        self.notes = []
        self.truncated_at: int | None = None     # the lowest offset of a PT_LOAD the file cuts short
        self.data_end = 0                         # where the PT_LOADs' data should end
        cut: list[tuple[int, int]] = []           # physical memory of PT_LOADs past the end of the file
        for i, ph in enumerate(header.phdrs):
            if ph.type not in (PT_LOAD, PT_NOTE):
                continue
            if max(ph.offset, ph.filesz, ph.memsz) > MAX_FILE_OFFSET:
                raise BadInputError(f"{self.path}: program header {i} has offset {ph.offset:#x}, file size "
                                    f"{ph.filesz:#x}, memory size {ph.memsz:#x}: not a file position or size "
                                    "(corrupt ELF header)")
            if ph.type == PT_LOAD:
                check_phys_end(ph.paddr + max(ph.filesz, ph.memsz), self.machine,
                               f"{self.path}: PT_LOAD {i} (physical {ph.paddr:#x}, {max(ph.filesz, ph.memsz):#x} bytes)")
                continue
            if ph.filesz > MAX_HEADER_BYTES:
                raise BadInputError(f"{self.path}: a PT_NOTE of {ph.filesz} bytes is not plausible")
            if ph.offset + ph.filesz > self.size:
                raise BadInputError(f"{self.path} is truncated: its notes end at {ph.offset + ph.filesz:#x}, "
                                    f"past the end of the file ({self.size:#x})")
            data = os.pread(self._fd, ph.filesz, ph.offset)
            if len(data) != ph.filesz:
                raise BadInputError(f"{self.path} is truncated: its notes end at {ph.offset + ph.filesz:#x}, "
                                    f"past the end of the file ({self.size:#x})")
            self.notes.extend(iter_notes(data, ph.offset, self.path))
        loads = []
        for ph in header.phdrs:
            if ph.type != PT_LOAD or ph.filesz == 0:
                continue
            filesz = ph.filesz
            self.data_end = max(self.data_end, ph.offset + filesz)
            if self.size and ph.offset + filesz > self.size:
                # A dump cut short (disk full, copy interrupted): keep what is there, remember where.
                self.truncated_at = ph.offset if self.truncated_at is None else min(self.truncated_at, ph.offset)
                filesz = max(0, self.size - ph.offset)
                cut.append((ph.paddr + filesz, ph.paddr + ph.filesz))
                if filesz == 0:
                    continue
            loads.append((ph.paddr, ph.paddr + filesz, ph.offset, ph.vaddr, ph.paddr + ph.memsz))
        # PT_LOADs may overlap physically (/proc/vmcore has the kernel text both as its own
        # segment and inside System RAM): index disjoint pieces, the first segment covering wins.
        loads.sort(key=lambda seg: (seg[0], -seg[1]))
        disjoint = []
        covered = -1
        for start, end, offset, vaddr, mend in loads:
            if end <= covered:
                continue
            if start < covered:
                skip = covered - start
                start, offset, vaddr = covered, offset + skip, vaddr + skip if vaddr else vaddr
            disjoint.append((start, end, offset, vaddr, mend))
            covered = end
        self._loads = disjoint
        self.cut_ranges = _subtract(cut, [(seg[0], seg[1]) for seg in disjoint])
        self._all_loads = loads
        self._starts = [seg[0] for seg in self._loads]
        self._windows: dict[int, mmap.mmap] = {}     # window number -> its mapping, least recently used first
        self._mappable = self.size > 0                # until a mapping fails (pipes, /proc/kcore): then pread
        source = f"{self.path}: the page size given"
        if page_size is None:
            source = f"{self.path}: VMCOREINFO PAGESIZE"
            try:
                page_size = self.vmcoreinfo.page_size or 4096
            except BadInputError:
                page_size = 4096
        self.page_size = check_page_size(page_size, self.machine, source)
        top = max((seg[1] for seg in disjoint), default=0)
        if top // page_size // 8 > max(self.size, MAX_SPARSE_BITMAP):
            raise BadInputError(f"{self.path}: a PT_LOAD ends at physical {top:#x}, which would take a "
                                f"{top // page_size // 8 >> 20} MiB bitmap of page frames for a file of "
                                f"{self.size} bytes (corrupt program header)")

    def close(self) -> None:
        for window in self._windows.values():
            window.close()
        self._windows.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _segment(self, paddr: int) -> tuple[int, int, int, int, int] | None:
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:
            seg = self._loads[i]
            if paddr < seg[1]:
                return seg
        return None

    def _read_file(self, offset: int, size: int) -> bytes:
        # Small random reads through a mapped window; bulk reads (the writer's chunks) and reads that
        # straddle two windows with pread.
        if size < BULK_READ and self._mappable:
            number = offset // MAP_WINDOW
            if (offset + size - 1) // MAP_WINDOW == number:
                window = self._window(number)
                if window is not None:
                    at = offset - number * MAP_WINDOW
                    return window[at:at + size]
        return os.pread(self._fd, size, offset)

    def _window(self, number: int) -> mmap.mmap | None:
        """The mapping of window ``number`` (mapped now if it is not; the least recently used one
        unmapped to make room), or None when the file cannot be mapped."""
        window = self._windows.pop(number, None)
        if window is None:
            start = number * MAP_WINDOW
            length = min(MAP_WINDOW, self.size - start)
            if length <= 0:
                return None
            if len(self._windows) >= MAP_WINDOWS:
                self._windows.pop(next(iter(self._windows))).close()
            try:
                window = mmap.mmap(self._fd, length, prot=mmap.PROT_READ, offset=start)
            except (OSError, ValueError):
                self._mappable = False
                return None
        self._windows[number] = window
        return window

    def missing_memory(self) -> str | None:
        if self.truncated_at is None:
            return None
        where = f", at physical {summarize_ranges(self.cut_ranges)}" if self.cut_ranges else ""
        return (f"{self.path} is cut short: the file ends at {self.size:#x}, its PT_LOADs' data runs to "
                f"{self.data_end:#x} ({self.lost_pages()} pages past the end{where})")

    def read_phys(self, paddr: int, size: int) -> bytes:
        seg = self._segment(paddr)
        if seg is not None and paddr + size <= seg[1]:
            # within one PT_LOAD (nearly every read): the file's bytes as they come, no copy
            return self._read_file(seg[2] + paddr - seg[0], size)
        out = bytearray()
        while size > 0:
            seg = self._segment(paddr)
            if seg is None:
                raise MemoryMissing(paddr)
            start, end, offset, _, _ = seg
            n = min(size, end - paddr)
            out += self._read_file(offset + paddr - start, n)
            paddr += n
            size -= n
        return bytes(out)

    def file_offset(self, paddr: int) -> int | None:
        """Offset in the file of physical ``paddr`` (None if not present)."""
        seg = self._segment(paddr)
        return None if seg is None else seg[2] + paddr - seg[0]

    def ranges(self) -> list[PhysRange]:
        return [PhysRange(s, e, v) for s, e, _, v, _ in self._loads]

    def has_page(self, pfn: int) -> bool:
        paddr = pfn * self.page_size
        seg = self._segment(paddr)
        return seg is not None and paddr + self.page_size <= seg[1]

    def read_page(self, pfn: int) -> bytes:
        return self.read_phys(pfn * self.page_size, self.page_size)

    def lost_pages(self) -> int:
        """Pages the file's PT_LOADs describe that lie past its end."""
        return sum(-(-(e - s) // self.page_size) for s, e in self.cut_ranges)

    def virtual_segments(self) -> list[tuple[int, int, int]]:
        """(vaddr, paddr, size) of each PT_LOAD: a translation the ELF header itself gives."""
        return [(v, s, e - s) for s, e, _, v, _ in self._all_loads if v]


def _subtract(ranges: list[tuple[int, int]], present: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``ranges`` that no range of ``present`` (sorted, disjoint) covers, merged and sorted."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        i = max(bisect.bisect_right([p[0] for p in present], start) - 1, 0)
        while start < end:
            while i < len(present) and present[i][1] <= start:
                i += 1
            if i < len(present) and present[i][0] <= start:
                start = present[i][1]
                continue
            stop = min(end, present[i][0]) if i < len(present) else end
            if out and out[-1][1] >= start:
                out[-1] = (out[-1][0], max(out[-1][1], stop))
            else:
                out.append((start, stop))
            start = stop
    return out
