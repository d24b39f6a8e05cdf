"""Read kdump-compressed dumps (makedumpfile's format and ours), plain or flattened (-F).

Random access: the 2nd bitmap says which pfns were dumped; a page's descriptor
index is the number of dumped pfns before it, found with a prefix count kept per
4096-pfn chunk of the bitmap. A flattened file is indexed once (its records say
at which offset of the plain file each piece belongs) and then read the same way.
"""
from __future__ import annotations

import bisect
import os

from kexecfw.elfnotes import iter_notes
from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import check_page_size, check_phys_end
from kexecfw.vmcore.dumpfile import DumpFile, MemoryLost, MemoryMissing, PhysRange
from kexecfw.vmcore.kdumpfmt import (DISK_DUMP_HEADER, DISKDUMP_SIGNATURE, DUMP_DH_COMPRESSED_INCOMPLETE,
                                     END_FLAG_FLAT_HEADER, FLAT_DATA_HEADER, FLAT_HEADER, FLAT_HEADER_SIZE,
                                     KDUMP_SIGNATURE, KDUMP_SUB_HEADER, MAKEDUMPFILE_SIGNATURE, PAGE_DESC,
                                     codec_name, decompressor)

CHUNK_BITS = 4096                     # pfns per prefix-count entry
MAX_NOTES = 64 << 20
# A flattened file may leave out zero pieces (sparse): its bitmaps are bounded by the bytes it
# stores, with this floor for the zero bitmap of a sparse physical address space.
MAX_SPARSE_BITMAPS = 64 << 20


class _Plain:
    """pread on a regular kdump file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size       # offsets a read may reach
        self.stored = self.size                # bytes the file really holds

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)


class _Flat:
    """pread on a flattened file: an index of (plain offset, size, position in the flat file).

    Records apply in stream order, a later one overriding an earlier one wherever they overlap, as
    ``makedumpfile -R`` does (it writes each record at its offset in turn); a writer streaming to a
    pipe rewrites its header and bitmap that way. The index keeps the pieces that show through, in
    offset order, never overlapping."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.starts: list[int] = []
        self.pieces: list[tuple[int, int, int]] = []      # (start, size, position in the flat file)
        pos = FLAT_HEADER_SIZE
        file_size = os.fstat(fd).st_size
        self.cut_at: int | None = None     # where a stream cut short ends (no end marker)
        while True:
            raw = os.pread(fd, FLAT_DATA_HEADER.size, pos)
            if len(raw) < FLAT_DATA_HEADER.size:
                self.cut_at = file_size
                break
            offset, size = FLAT_DATA_HEADER.unpack(raw)
            if offset == END_FLAG_FLAT_HEADER and size == END_FLAG_FLAT_HEADER:
                break
            if offset < 0 or size < 0:
                raise BadInputError(f"{path}: flattened record at {pos:#x} (offset {offset}, size {size}) "
                                    "is corrupt")
            at = pos + FLAT_DATA_HEADER.size
            if at + size > file_size:
                # a stream cut short: keep the part of its last piece that arrived
                self.cut_at = file_size
                if file_size > at:
                    self._overlay(offset, file_size - at, at)
                break
            if size:
                self._overlay(offset, size, at)
            pos = at + size
        self.size = max((s + n for s, n, _ in self.pieces), default=0)
        self.stored = file_size

    def _overlay(self, start: int, size: int, at: int) -> None:
        """Record (start, size) at flat position ``at`` over what earlier records put there."""
        end = start + size
        pieces, starts = self.pieces, self.starts
        if not pieces or start >= pieces[-1][0] + pieces[-1][1]:      # the common case: past the end
            pieces.append((start, size, at))
            starts.append(start)
            return
        i = bisect.bisect_right(starts, start) - 1
        kept: list[tuple[int, int, int]] = []
        if i >= 0 and pieces[i][0] + pieces[i][1] > start:
            s, n, a = pieces[i]
            kept.append((s, start - s, a))                      # its part before the new record
        else:
            i += 1
        j = i
        while j < len(pieces) and pieces[j][0] < end:
            j += 1
        kept = [p for p in kept if p[1] > 0] + [(start, size, at)]
        if j > i:
            s, n, a = pieces[j - 1]
            if s + n > end:
                kept.append((end, s + n - end, a + end - s))     # its part after the new record
        pieces[i:j] = kept
        starts[i:j] = [p[0] for p in kept]

    def pread(self, size: int, offset: int) -> bytes:
        out = bytearray()
        while size > 0:
            i = bisect.bisect_right(self.starts, offset) - 1
            if i < 0:
                break
            start, n, at = self.pieces[i]
            if offset >= start + n:
                # A gap the writer skipped (sparse): zeros, up to the next piece.
                nxt = self.starts[i + 1] if i + 1 < len(self.starts) else offset + size
                gap = min(size, nxt - offset)
                out += bytes(gap)
                offset += gap
                size -= gap
                continue
            take = min(size, start + n - offset)
            out += os.pread(self.fd, take, at + offset - start)
            offset += take
            size -= take
        return bytes(out)


class KdumpFile(DumpFile):
    """A kdump-compressed dump: ``read_phys`` decompresses pages on demand (a small page cache)."""

    def __init__(self, path: str) -> None:
        self._attach(path, self._open)

    def _open(self) -> None:
        head = os.pread(self._fd, FLAT_HEADER.size, 0)
        if head.startswith(MAKEDUMPFILE_SIGNATURE):
            self._io: _Plain | _Flat = _Flat(self._fd, self.path)
            self.format = "flattened-kdump"
        else:
            self._io = _Plain(self._fd)
            self.format = "kdump"
        raw = self._io.pread(DISK_DUMP_HEADER.size, 0)
        if len(raw) < DISK_DUMP_HEADER.size:
            raise BadInputError(f"{self.path} is too short for a kdump header")
        (sig, version, uts, tv_sec, _tv_usec, status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr,
         _total, _dev, _written, current_cpu, nr_cpus) = DISK_DUMP_HEADER.unpack(raw)
        if sig not in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
            raise BadInputError(f"{self.path}: not a kdump-compressed dump (signature {sig!r})")
        fields = [f.split(b"\0", 1)[0].decode("utf-8", "replace") for f in
                  (uts[i * 65:(i + 1) * 65] for i in range(6))]
        self.utsname = dict(zip(("sysname", "nodename", "release", "version", "machine", "domainname"), fields))
        from kexecfw.machines import machine_for_uts
        self.machine = machine_for_uts(self.utsname["machine"])
        check_page_size(block_size, self.machine, f"{self.path}: header block_size")
        if sub_hdr_size < 0 or bitmap_blocks == 0:
            raise BadInputError(f"{self.path}: corrupt header (sub header {sub_hdr_size} blocks, "
                                f"bitmap {bitmap_blocks} blocks)")
        self.header_version = version
        self.status = status
        self.incomplete = bool(status & DUMP_DH_COMPRESSED_INCOMPLETE)
        self.compression = codec_name(status)
        self.page_size = block_size
        self.timestamp = tv_sec
        self.current_cpu = current_cpu
        self.nr_cpus = nr_cpus
        self.dump_level = None
        self.notes = []
        self.max_mapnr = max_mapnr
        self.split = 0
        self.start_pfn = 0
        self.end_pfn: int | None = None
        if version >= 1:
            sub = self._io.pread(KDUMP_SUB_HEADER.size, block_size)
            if len(sub) < KDUMP_SUB_HEADER.size:
                raise BadInputError(f"{self.path} is truncated inside its sub header")
            (self.phys_base, self.dump_level, self.split, sp, ep, _ovi, _svi, off_note, size_note,
             _oe, _se, sp64, ep64, max64) = KDUMP_SUB_HEADER.unpack(sub)
            if version >= 6 and max64:
                # both writers keep the 32-bit field as min(max_mapnr_64, 2^32 - 1)
                if max_mapnr != min(max64, 0xFFFFFFFF):
                    raise BadInputError(f"{self.path}: the header's max_mapnr {max_mapnr} and the sub header's "
                                        f"max_mapnr_64 {max64} disagree (corrupt header)")
                self.max_mapnr = max64
            if self.split:
                # one file of a --split set: it holds the pages of [start_pfn, end_pfn) only
                self.start_pfn, self.end_pfn = (sp64, ep64) if version >= 6 else (sp, ep)
            if version >= 4 and size_note:
                self.notes = list(iter_notes(self._extent(off_note, size_note, "notes"), off_note, self.path))
            elif version >= 3 and _svi:
                from kexecfw.elfnotes import Note
                self.notes = [Note(b"VMCOREINFO", 0, self._extent(_ovi, _svi, "VMCOREINFO"), _ovi)]
        check_phys_end(self.max_mapnr * block_size, self.machine, f"{self.path}: header max_mapnr "
                       f"{self.max_mapnr} (pages of {block_size} bytes)")
        bitmap_len = bitmap_blocks * block_size // 2
        if bitmap_len * 8 < self.max_mapnr:
            raise BadInputError(f"{self.path}: its bitmaps ({bitmap_blocks} blocks) cannot cover "
                                f"{self.max_mapnr} pages (corrupt header)")
        bitmap_at = (1 + sub_hdr_size) * block_size
        need = (self.max_mapnr + 7) // 8
        # Both bitmaps are read whole: they must lie in the file (a flattened file may leave zero
        # pieces out, up to a bound) before anything of their size is allocated.
        if bitmap_at + 2 * bitmap_len > self._io.size or 2 * bitmap_len > max(self._io.stored, MAX_SPARSE_BITMAPS):
            if self.incomplete:
                raise BadInputError(f"{self.path} is an incomplete dump (marked so when the disk filled up) "
                                    "that ends inside its bitmaps: no page of it is readable")
            raise BadInputError(f"{self.path} is truncated inside its bitmaps: they need "
                                f"{bitmap_at + 2 * bitmap_len:#x} bytes, the file has {self._io.size:#x}")
        self._bitmap1 = self._io.pread(need, bitmap_at)
        self._bitmap2 = self._io.pread(need, bitmap_at + bitmap_len)
        self._check_bitmap_tail(bitmap_at + bitmap_len, need, bitmap_len)
        self._desc_at = (1 + sub_hdr_size + bitmap_blocks) * block_size
        # prefix counts of dumped pages per CHUNK_BITS pfns
        step = CHUNK_BITS // 8
        self._prefix = [0]
        total = 0
        for at in range(0, need, step):
            total += int.from_bytes(self._bitmap2[at:at + step], "little").bit_count()
            self._prefix.append(total)
        self.dumped_pages = total
        if self.split:
            end = min(self.end_pfn or self.max_mapnr, self.max_mapnr)
            if not 0 <= self.start_pfn <= end:
                raise BadInputError(f"{self.path}: split range {self.start_pfn:#x}..{end:#x} is corrupt")
            self.end_pfn = end
            self._base_index = self._count_before(self.start_pfn)
            self.dumped_pages = self._count_before(end) - self._base_index
        else:
            self._base_index = 0
        # where the page descriptors end: a file that ends before has lost the pages past it
        self.desc_end = self._desc_at + self.dumped_pages * PAGE_DESC.size
        self._cache: dict[int, bytes] = {}
        self._decomp: dict[int, object] = {}

    def _check_bitmap_tail(self, at: int, need: int, bitmap_len: int) -> None:
        """The 2nd bitmap marks no page at or past max_mapnr: a max_mapnr lowered by corruption would
        silently drop the pages above it."""
        if self.max_mapnr & 7 and self._bitmap2[-1] >> (self.max_mapnr & 7):
            raise self._past_max_mapnr()
        for pos in range(need, bitmap_len, 1 << 20):
            if any(self._io.pread(min(1 << 20, bitmap_len - pos), at + pos)):
                raise self._past_max_mapnr()

    def _past_max_mapnr(self) -> BadInputError:
        return BadInputError(f"{self.path}: its bitmap marks pages past max_mapnr {self.max_mapnr} "
                             "(corrupt header)")

    def _extent(self, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``offset`` named ``what`` in the sub header, checked against the file."""
        if size > MAX_NOTES or offset <= 0 or offset + size > self._io.size:
            raise BadInputError(f"{self.path}: its {what} ({size} bytes at {offset:#x}) are not in the file "
                                f"of {self._io.size:#x} bytes (truncated or corrupt sub header)")
        data = self._io.pread(size, offset)
        if len(data) != size:
            raise BadInputError(f"{self.path} is truncated inside its {what}")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _dumped(self, pfn: int) -> bool:
        if self.split and not self.start_pfn <= pfn < self.end_pfn:
            return False
        return 0 <= pfn < self.max_mapnr and bool(self._bitmap2[pfn >> 3] >> (pfn & 7) & 1)

    def has_page(self, pfn: int) -> bool:
        return self._dumped(pfn)

    def _desc_index(self, pfn: int) -> int:
        return self._count_before(pfn) - self._base_index

    def _count_before(self, pfn: int) -> int:
        """Dumped pages below ``pfn`` according to the 2nd bitmap."""
        if pfn >= self.max_mapnr:
            return self._prefix[-1]
        chunk = pfn // CHUNK_BITS
        start = chunk * CHUNK_BITS
        count = self._prefix[chunk]
        lo = start // 8
        hi = pfn // 8
        if hi > lo:
            count += int.from_bytes(self._bitmap2[lo:hi], "little").bit_count()
        count += (self._bitmap2[hi] & ((1 << (pfn & 7)) - 1)).bit_count()
        return count

    def read_page(self, pfn: int) -> bytes:
        page = self._cache.get(pfn)
        if page is not None:
            return page
        if not self._dumped(pfn):
            excluded = 0 <= pfn < self.max_mapnr and bool(self._bitmap1[pfn >> 3] >> (pfn & 7) & 1) \
                and bool(not self._bitmap2[pfn >> 3] >> (pfn & 7) & 1)
            raise MemoryMissing(pfn * self.page_size, "excluded by the dump level" if excluded else "not RAM",
                                excluded=excluded)
        # Every page below is one the bitmap says is in the file: failing to read it intact is a loss.
        paddr = pfn * self.page_size
        at = self._desc_at + self._desc_index(pfn) * PAGE_DESC.size
        if at + PAGE_DESC.size > self._io.size:
            raise MemoryLost(paddr, f"its page descriptor at {at:#x} is past the end of the file "
                             f"({self._io.size:#x} bytes)")
        offset, size, flags, _ = PAGE_DESC.unpack(self._io.pread(PAGE_DESC.size, at))
        if offset <= 0 or size == 0:
            raise MemoryLost(paddr, "not written: the dump is incomplete" if self.incomplete
                             else f"its page descriptor at {at:#x} is empty")
        if size > 2 * self.page_size + 1024:
            raise MemoryLost(paddr, f"its page descriptor at {at:#x} claims {size} bytes of data (corrupt)")
        if offset + size > self._io.size:
            raise MemoryLost(paddr, f"its data ({size} bytes at {offset:#x}) is past the end of the file "
                             f"({self._io.size:#x} bytes)")
        data = self._io.pread(size, offset)
        if len(data) != size:
            raise MemoryLost(paddr, f"its data ({size} bytes at {offset:#x}) is past the end of the file")
        fn = self._decomp.get(flags)
        if fn is None:
            try:
                fn = decompressor(flags, self.page_size)
            except ImportError as e:
                raise BadInputError(f"{self.path}: pages compressed with {codec_name(flags)} need the "
                                    f"Python module {e.name!r}; install it") from None
            self._decomp[flags] = fn
        try:
            page = fn(data)  # type: ignore[operator]
        except Exception as e:  # codec errors have many types; the page is what is wrong
            raise MemoryLost(paddr, f"its {codec_name(flags)} data does not decompress ({e})") from None
        if len(page) != self.page_size:
            raise MemoryLost(paddr, f"its {codec_name(flags)} data decompresses to {len(page)} bytes, "
                             f"not {self.page_size}")
        if len(self._cache) >= 64:
            self._cache.clear()
        self._cache[pfn] = page
        return page

    def missing_memory(self) -> str | None:
        if self.incomplete:
            return f"{self.path} is marked incomplete (the save that wrote it stopped early)"
        if getattr(self._io, "cut_at", None) is not None:
            return (f"{self.path} is a flattened stream cut short: it ends at {self._io.cut_at:#x} without its "
                    f"end marker; its pieces reach offset {self._io.size:#x} of the dump")
        if self.desc_end > self._io.size:
            return (f"{self.path} is cut short: the file ends at {self._io.size:#x}, its page descriptors "
                    f"run to {self.desc_end:#x} ({self.descriptors_past_end()} pages past the end)")
        return None

    def descriptors_past_end(self) -> int:
        """Dumped pages whose descriptor lies past the end of the file."""
        in_file = max(0, self._io.size - self._desc_at) // PAGE_DESC.size
        return max(0, self.dumped_pages - in_file)

    def scan_lost(self, block: int = 1 << 20) -> tuple[int, int]:
        """(pages the bitmap holds whose descriptor or data is not in the file, where their data would
        end): a pass over the descriptors the file has, without decompressing anything."""
        lost = self.descriptors_past_end()
        data_end = 0
        size = self._io.size
        end = min(self.desc_end, self._desc_at + (self.dumped_pages - lost) * PAGE_DESC.size)
        step = block // PAGE_DESC.size * PAGE_DESC.size
        for at in range(self._desc_at, end, step):
            raw = self._io.pread(min(step, end - at), at)
            raw = raw[:len(raw) // PAGE_DESC.size * PAGE_DESC.size]
            for offset, n, _, _ in PAGE_DESC.iter_unpack(raw):
                if offset <= 0 or n == 0 or n > 2 * self.page_size + 1024 or offset + n > size:
                    lost += 1
                    data_end = max(data_end, offset + n)
        return lost, max(data_end, self.desc_end if self.desc_end > size else 0)

    def read_phys(self, paddr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            pfn, off = divmod(paddr, self.page_size)
            n = min(size, self.page_size - off)
            out += self.read_page(pfn)[off:off + n]
            paddr += n
            size -= n
        return bytes(out)

    def ranges(self) -> list[PhysRange]:
        """Runs of dumped pages (of this file's part for one file of a split set)."""
        bm = self._bitmap2
        if self.split:
            lo, hi = self.start_pfn * self.page_size, self.end_pfn * self.page_size
            return [PhysRange(max(r.start, lo), min(r.end, hi)) for r in self._all_ranges(bm)
                    if r.end > lo and r.start < hi]
        return self._all_ranges(bm)

    def _all_ranges(self, bm: bytes) -> list[PhysRange]:
        out: list[PhysRange] = []
        start = None
        for byte_i, byte in enumerate(bm):
            if byte == 0 and start is None:
                continue
            if byte == 0xFF and start is not None:
                continue
            for bit in range(8):
                pfn = byte_i * 8 + bit
                if pfn >= self.max_mapnr:
                    break
                on = byte >> bit & 1
                if on and start is None:
                    start = pfn
                elif not on and start is not None:
                    out.append(PhysRange(start * self.page_size, pfn * self.page_size))
                    start = None
        if start is not None:
            out.append(PhysRange(start * self.page_size, self.max_mapnr * self.page_size))
        return out

    def max_pfn(self) -> int:
        return self.max_mapnr


class KdumpSet(DumpFile):
    """The files of a ``makedumpfile --split`` set read as one dump."""

    format = "kdump-split"

    def __init__(self, paths: list[str]) -> None:
        self.parts = [KdumpFile(p) for p in paths]
        self.parts.sort(key=lambda k: k.start_pfn)
        first = self.parts[0]
        for k in self.parts:
            if not k.split:
                raise BadInputError(f"{k.path} is not part of a split dump: open it alone")
            if k.max_mapnr != first.max_mapnr or k.page_size != first.page_size:
                raise BadInputError(f"{k.path} does not belong with {first.path} (different system)")
        for a, b in zip(self.parts, self.parts[1:]):
            if a.end_pfn != b.start_pfn:
                raise BadInputError(f"split set is missing the pages {a.end_pfn:#x}..{b.start_pfn:#x} "
                                    f"(between {a.path} and {b.path}): give every file of the set")
        self.path = ",".join(paths)
        self.machine, self.notes, self.page_size = first.machine, first.notes, first.page_size
        self.incomplete = any(k.incomplete for k in self.parts)
        self.compression, self.dump_level = first.compression, first.dump_level
        self.dumped_pages = sum(k.dumped_pages for k in self.parts)
        self._starts = [k.start_pfn for k in self.parts]

    def close(self) -> None:
        for k in self.parts:
            k.close()

    def _part(self, pfn: int) -> KdumpFile:
        return self.parts[max(bisect.bisect_right(self._starts, pfn) - 1, 0)]

    def missing_memory(self) -> str | None:
        return next((m for m in (part.missing_memory() for part in self.parts) if m), None)

    def read_phys(self, paddr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            pfn, off = divmod(paddr, self.page_size)
            n = min(size, self.page_size - off)
            out += self._part(pfn).read_page(pfn)[off:off + n]
            paddr += n
            size -= n
        return bytes(out)

    def has_page(self, pfn: int) -> bool:
        return self._part(pfn).has_page(pfn)

    def ranges(self) -> list[PhysRange]:
        return [r for k in self.parts for r in k.ranges()]

    def max_pfn(self) -> int:
        return self.parts[0].max_mapnr
