"""Write a dump: kdump-compressed (makedumpfile's format, header version 6) or ELF.

Streaming with bounded memory. The writer holds the two bitmaps (max_pfn / 8
bytes each), one section of struct pages while classifying (2 MiB for a 128 MiB
section, unpacked lazily), and at most ``2 x threads + 2`` chunks of ``CHUNK_PAGES`` pages
in flight (raw and compressed; one thread compresses inline, one chunk at a time); page
data is read with pread, not through the mapping (the reader unmaps what small reads
mapped), and the output's page cache is dropped every 32 MiB. Nothing else grows with the
dump: measured in the capture kernel of lab guests whose memory was filled before the
crash (bench/run.py dump-rss; latest numbers in the README), the peak RSS of a 1 GiB and of
an 8 GiB guest's save is about 20 MiB either way, so a 256 MiB capture kernel keeps most of
its memory for the kernel and page cache.

Order of writing (kdump-compressed): header (marked DUMP_DH_COMPRESSED_INCOMPLETE),
sub header and notes, both bitmaps (allocated now so that rewriting them later
needs no new disk blocks), then page data after a region reserved for the page
descriptors, each chunk's descriptors right after its data. At the end the 2nd
bitmap (zero pages removed) and the header (incomplete flag cleared) are
rewritten, the file is fsync'ed and renamed over OUT. If the disk fills up
(ENOSPC, EDQUOT, EFBIG) the file keeps the incomplete flag, its bitmap and
descriptors describe exactly the pages written, it is renamed to
``OUT.incomplete`` and :class:`DumpIncomplete` is raised (exit code 6).

The same writing goes to a stream that cannot seek (``write_flat``: ssh's stdin, stdout) as
makedumpfile's flattened format (``-F``): every positioned write becomes one record (offset, size,
data), so the closing rewrites of the 2nd bitmap and the header are later records for the same
offsets, which override the earlier ones when the stream is read (by kexecfw) or reassembled
(``makedumpfile -R``). Nothing is written locally; the stream carries the rewritten bitmap once more.

A dump is complete only when every page it meant to write was read intact. A page the input
holds but cannot give (MemoryLost: its descriptor or data past the end of a file cut short,
corrupt, or not decompressing) is left out of the output (no descriptor, its bit cleared), counted
with its pfn ranges in the statistics (``pages_lost``, ``lost_ranges``), and the output is
``OUT.incomplete`` as above; so is the copy of an input that says it lacks memory
(``DumpFile.missing_memory``). Memory the input never had (holes, the parts of a page outside an
unaligned PT_LOAD, pages its dump level left out) is absent, not lost. The accounting runs only
when a chunk's read fails: a complete input is read as fast as before.

Compression: one page at a time as the format requires (zlib streams from the engine that is fastest
on this CPU, timed on the dump's own pages, kexecfw.vmcore.zlibengine: ISA-L or libdeflate, each with a
retry, else the standard library's zlib level 1 like makedumpfile; zstd level 3, which on a lab guest's
-d 31 pages is smaller than zlib level 1 at a third of its time, where level 1 is not smaller; lzo1x_1
when python-lzo is installed), a page is stored raw when compressing does not make it smaller. Every
engine releases the GIL, so threads (one per CPU the process may run on) compress in parallel. Zero
pages are removed (-d 1) or share one stored copy, as makedumpfile does. Time and pages per phase are
counted as the save goes (kexecfw.vmcore.phases), in the statistics as ``phases``, with the engine that
ran as ``engine``.
"""
from __future__ import annotations

import bisect
import errno
import os
import signal
import threading
import time
from contextlib import contextmanager

from kexecfw.elfnotes import ELF64_EHDR, ELF64_NHDR, ELF64_PHDR, ET_CORE, PT_LOAD, PT_NOTE, Note
from kexecfw.errors import NO_SPACE_ERRNOS, BadInputError, ExitCode, KexecfwError, exit_code_of
from kexecfw.vmcore.dumpfile import DumpFile, MemoryLost, MemoryMissing, summarize_ranges
from kexecfw.vmcore.kdumpfmt import (CODEC_FLAGS, DISK_DUMP_HEADER, DL_EXCLUDE_ZERO,
                                     DUMP_DH_COMPRESSED_INCOMPLETE, END_FLAG_FLAT_HEADER, FLAT_DATA_HEADER,
                                     FLAT_HEADER, FLAT_HEADER_SIZE, HEADER_VERSION, KDUMP_SIGNATURE,
                                     KDUMP_SUB_HEADER, MAKEDUMPFILE_SIGNATURE, PAGE_DESC, TYPE_FLAT_HEADER,
                                     VERSION_FLAT_HEADER)
from kexecfw.vmcore.kmem import KernelMemory, translator_for
from kexecfw.vmcore.phases import PhaseTimes, mark

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: a capture kernel's save does not import typing
if TYPE_CHECKING:
    from typing import Callable, Iterator

CHUNK_PAGES = 256
# A capture kernel has little RAM: write back and drop the dump's page cache every so often
# so that dirty pages of a slow disk do not pile up (they count against the RSS budget's host).
FLUSH_BYTES = 32 << 20


class DumpIncomplete(KexecfwError):
    """The dump on disk is marked incomplete: the disk filled up, or the input lacks memory."""

    exit_code = ExitCode.INCOMPLETE


class _NoSpace(Exception):
    """The output cannot grow: args[0] says why (a full disk, or the --min-free floor)."""

    def __init__(self, why: str = "the disk filled up") -> None:
        super().__init__(why)


class LostPages:
    """Pages the input says it holds that could not be read intact: how many, why (the first
    reason), and where, as runs of pfns of which the first few are kept (the reads come in pfn
    order, so a run grows at its end; memory stays constant however many pages are lost)."""

    SHOWN = 3

    def __init__(self) -> None:
        self.pages = 0
        self.runs = 0
        self.first: list[tuple[int, int]] = []
        self.why: str | None = None
        self._end = -1

    def add(self, pfn: int, why: str) -> None:
        self.pages += 1
        if self.why is None:
            self.why = why
        if pfn == self._end:
            self._end += 1
            if self.runs <= self.SHOWN:
                self.first[-1] = (self.first[-1][0], self._end)
            return
        self.runs += 1
        self._end = pfn + 1
        if self.runs <= self.SHOWN:
            self.first.append((pfn, pfn + 1))

    def physical(self, page_size: int) -> list[tuple[int, int]]:
        return [(lo * page_size, hi * page_size) for lo, hi in self.first]

    def describe(self, page_size: int) -> str:
        return (f"{self.pages} pages could not be read, at physical "
                f"{summarize_ranges(self.physical(page_size), self.runs, self.SHOWN)} (the first: {self.why})")


def _codec(name: str, page_size: int) -> tuple[Callable[[], Callable[[bytes], bytes]], Callable[[], str]]:
    """A factory of per-thread compress functions for ``name`` (each takes a bytes-like page), and
    a function naming what compressed (library, version, level; asked after the save: the zlib
    engine chooses while it compresses)."""
    if name == "zlib":
        from kexecfw.vmcore.zlibengine import zlib_engine
        engine = zlib_engine(page_size=page_size)
        return engine.make, lambda: engine.name
    if name == "zstd":
        try:
            import zstandard
        except ImportError:     # no wheel on PyPI for riscv64: Debian's python3-zstandard there
            raise BadInputError("-c zstd needs the zstandard module (pip install zstandard, or apt-get install "
                                "python3-zstandard); or use -c zlib") from None

        def make() -> Callable[[bytes], bytes]:
            return zstandard.ZstdCompressor(level=3).compress
        return make, lambda: f"zstandard {zstandard.__version__} level 3"
    if name == "lzo":
        try:
            import lzo  # python-lzo
        except ImportError:
            raise BadInputError("-c lzo needs the python-lzo module (pip install python-lzo); "
                                "or use -c zlib") from None
        # python-lzo takes bytes only, not a view of them
        return lambda: (lambda page: lzo.compress(bytes(page), 1, False)), lambda: "python-lzo lzo1x_1"
    if name == "none":
        return lambda: (lambda page: page), lambda: "none"
    raise BadInputError(f"unknown compression {name!r}: use zlib, zstd, lzo or none")


def usable_cpus() -> int:
    """CPUs this process may run on (taskset, cgroup cpusets; a capture kernel's maxcpus=1), not the
    machine's: a pool larger than that only adds switching."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _set_bits(bitmap: bytearray, lo: int, hi: int, value: bool) -> None:
    """Set or clear bits [lo, hi) of an LSB-first bitmap."""
    while lo < hi and lo & 7:
        _bit(bitmap, lo, value)
        lo += 1
    full = (hi - lo) // 8
    if full > 0:
        bitmap[lo // 8:lo // 8 + full] = (b"\xff" if value else b"\0") * full
        lo += full * 8
    while lo < hi:
        _bit(bitmap, lo, value)
        lo += 1


def _bit(bitmap: bytearray, pfn: int, value: bool) -> None:
    if value:
        bitmap[pfn >> 3] |= 1 << (pfn & 7)
    else:
        bitmap[pfn >> 3] &= ~(1 << (pfn & 7)) & 0xFF


def _runs(bitmap: bytes, max_pfn: int) -> Iterator[tuple[int, int]]:
    """[lo, hi) runs of set bits."""
    start = None
    n = len(bitmap)
    i = 0
    while i < n:
        byte = bitmap[i]
        if start is None and byte == 0:
            # skip whole zero words quickly
            j = i
            while j + 8 <= n and not any(bitmap[j:j + 8]):
                j += 8
            i = max(j, i + 1) if j > i else i + 1
            continue
        if start is not None and byte == 0xFF:
            i += 1
            continue
        for b in range(8):
            pfn = i * 8 + b
            on = byte >> b & 1
            if on and start is None:
                start = pfn
            elif not on and start is not None:
                yield start, pfn
                start = None
        i += 1
    if start is not None:
        yield start, min(n * 8, max_pfn)


def _mark_lost(results: list[tuple[bool, bytes, int]], lo: int,
               lost: list[int] | None) -> list[tuple[bool, bytes, int]]:
    """Chunk ``results`` with the pages in ``lost`` marked (True, b"", -1): not written, not described."""
    if lost is not None:
        for pfn in lost:
            results[pfn - lo] = (True, b"", -1)
    return results


def notes_blob(notes: list[Note]) -> tuple[bytes, int | None, int]:
    """Serialize notes as Elf64_Nhdr records; return (blob, VMCOREINFO desc offset, its size)."""
    out = bytearray()
    vi_off, vi_size = None, 0
    for n in notes:
        name = n.name + b"\0"
        out += ELF64_NHDR.pack(len(name), len(n.desc), n.type)
        out += name + bytes(-len(name) % 4)
        if n.name == b"VMCOREINFO":
            vi_off, vi_size = len(out), len(n.desc)
        out += n.desc + bytes(-len(n.desc) % 4)
    return bytes(out), vi_off, vi_size


class PageProgress:
    """Pages saved so far, shown through kexecfw.progress like every long command's progress: a live
    line on a terminal, a plain line every few seconds in a log (``--progress always``)."""

    def __init__(self, enabled: bool, total_pages: int, page_size: int) -> None:
        self.total = max(total_pages, 1)
        self.page_size = page_size
        self.last = 0.0
        self.shown = None
        if enabled:
            from kexecfw.progress import Progress
            self.shown = Progress("vmcore save")
            self.shown.phase("saving")

    def update(self, done: int, force: bool = False) -> None:
        """``done`` pages are saved; ``force`` at the end (the last count and the time taken)."""
        if self.shown is None:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        rate = done * self.page_size / max(now - self.shown.start, 1e-6) / (1 << 20)
        self.shown.update(f"{100 * done / self.total:5.1f}%  {done}/{self.total} pages  {rate:7.1f} MiB/s", force)
        if force:
            self.shown.done(f"{done} of {self.total} pages")
            self.shown = None


def remove_stale_partials(directory: str, name: str) -> list[str]:
    """Remove ``.NAME.PID.partial`` files in ``directory`` whose writer is gone (a save killed mid-way:
    a dump-sized file nobody will finish); a live writer's file is left alone."""
    removed = []
    prefix = f".{name}."
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        pid = entry[len(prefix):-len(".partial")] if entry.startswith(prefix) and entry.endswith(".partial") else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue                      # its writer still runs
        except ProcessLookupError:
            pass
        except OSError:
            continue                      # a process we may not signal: alive
        try:
            os.unlink(os.path.join(directory, entry))
            removed.append(entry)
        except OSError:
            pass
    return removed


class FileOutput:
    """The dump's file: each piece pwritten at its offset; written back and dropped from the page cache
    every FLUSH_BYTES (``flush``). A full disk, or ``byte_limit`` reached, is _NoSpace."""

    def __init__(self, fd: int, byte_limit: int | None) -> None:
        self.fd = fd
        self.byte_limit = byte_limit

    def reserve(self, nbytes: int) -> None:
        """The final rewrites land on blocks allocated at the start: nothing to keep back."""

    def write(self, data: bytes, offset: int, *, closing: bool = False) -> None:
        if self.byte_limit is not None and offset + len(data) > self.byte_limit:
            raise _NoSpace("the dump reached the free space it may use (--min-free)")
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as e:
                if e.errno in NO_SPACE_ERRNOS:
                    raise _NoSpace(_no_space_why(e)) from None
                raise
            if n == 0:
                raise _NoSpace()
            view = view[n:]
            offset += n

    def flush(self) -> None:
        try:
            os.fdatasync(self.fd)
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as e:
            if e.errno in NO_SPACE_ERRNOS:
                raise _NoSpace(_no_space_why(e)) from None
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EROFS):
                raise

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)


# a stream's reader gone (ssh cut, a pipe's reader ended): the output cannot grow, as on a full disk
STREAM_CUT_ERRNOS = (errno.EPIPE, errno.ECONNRESET)


class FlatStream:
    """makedumpfile's flattened format (``-F``) written to ``fd``, which is never sought (a pipe, ssh's
    stdin, stdout): the flat header, then each ``write(data, offset)`` as one record (offset, size, data),
    then the end marker. A record may target any offset, and a later one overrides an earlier one where
    they overlap (makedumpfile -R writes each at its offset in order; kexecfw's reader applies them in
    order), so the writer's final rewrites of bitmap and header are simply later records.

    ``byte_limit`` counts the stream's bytes; ``reserve`` keeps back room for the closing records (the
    rewrites), which a seekable file has allocated at the start. ``sent``: the bytes written; ``cut``:
    why the reader went away (EPIPE), else None."""

    def __init__(self, fd: int, byte_limit: int | None = None) -> None:
        self.fd = fd
        self.byte_limit = byte_limit
        self.reserved = 0
        self.sent = 0
        self.cut: str | None = None
        self._put(FLAT_HEADER.pack(MAKEDUMPFILE_SIGNATURE, TYPE_FLAT_HEADER, VERSION_FLAT_HEADER)
                  .ljust(FLAT_HEADER_SIZE, b"\0"))

    def reserve(self, nbytes: int) -> None:
        self.reserved = nbytes

    def write(self, data: bytes, offset: int, *, closing: bool = False) -> None:
        if not data:
            return          # makedumpfile -R refuses a record of size 0 ("no valid end header")
        keep = 0 if closing else self.reserved
        if self.byte_limit is not None and self.sent + FLAT_DATA_HEADER.size + len(data) + keep > self.byte_limit:
            raise _NoSpace("the dump reached the free space it may use (--min-free)")
        self._put(FLAT_DATA_HEADER.pack(offset, len(data)))
        self._put(data)

    def end(self) -> None:
        """The end marker: the stream is whole (what it holds may still be marked incomplete)."""
        self._put(FLAT_DATA_HEADER.pack(END_FLAG_FLAT_HEADER, END_FLAG_FLAT_HEADER))

    def flush(self) -> None:
        """Nothing to write back: the reader (ssh, a pipe) takes the data as it comes."""

    def _put(self, data: bytes) -> None:
        if self.cut is not None:
            raise _NoSpace(self.cut)
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as e:
                if e.errno in STREAM_CUT_ERRNOS:
                    self.cut = f"the stream was cut after {self.sent} bytes ({e.strerror})"
                    raise _NoSpace(self.cut) from None
                if e.errno in NO_SPACE_ERRNOS:
                    raise _NoSpace(_no_space_why(e)) from None
                raise
            view = view[n:]
            self.sent += n


class DumpWriter:
    """Save ``dump`` to ``out`` at ``dump_level`` with ``compress`` (kdump) or as ELF."""

    def __init__(self, dump: DumpFile, dump_level: int = 31, compress: str = "zlib", elf: bool = False,
                 threads: int = 0, progress: bool = False, panic_cpu: int = 0,
                 byte_limit: int | None = None) -> None:
        if not 0 <= dump_level <= 31:
            raise BadInputError(f"dump level {dump_level} is not in 0..31 (makedumpfile -d bits)")
        if threads < 0:
            raise BadInputError("--threads must be 0 (auto) or more")
        self.dump = dump
        self.level = dump_level
        self.codec = "none" if elf else compress
        self.make_compress, self.describe_engine = _codec(self.codec, dump.page_size)
        self.flag = CODEC_FLAGS[self.codec]
        self.elf = elf
        self.threads = threads or min(usable_cpus(), 8)
        self.phases = PhaseTimes()
        self.progress_enabled = progress
        self.panic_cpu = panic_cpu
        self.page_size = dump.page_size
        self.stats: dict[str, int | float | str] = {}
        self._local = threading.local()
        self.zero_page = bytes(self.page_size)
        # the file may not grow past this (the save flow's free-space floor): treated as a full disk
        self.byte_limit = byte_limit
        # A copy of a cut-short or incomplete dump holds no more than it: it is saved (what is there
        # is worth keeping) but never marked complete.
        self.input_missing = dump.missing_memory()
        self.lost = LostPages()
        self.stopped: str | None = None    # why the output could not grow (disk full, --min-free floor)
        self._range_index: tuple[list[int], list] | None = None

    # --- planning -----------------------------------------------------------------------
    def _bitmaps(self) -> tuple[bytearray, bytearray, int]:
        started = mark()
        max_pfn = self.dump.max_pfn()
        bm1 = bytearray((max_pfn + 7) // 8)
        for lo, hi in self.dump.iter_present_pfns():
            _set_bits(bm1, lo, min(hi, max_pfn), True)
        bm2 = bytearray(bm1)
        self.protected = self._protected_pfns()
        if self.level & ~DL_EXCLUDE_ZERO:
            from kexecfw.vmcore.classify import Classifier
            mem = KernelMemory(self.dump)
            cls = Classifier(mem, self.level)
            runs = list(_runs(bytes(bm1), max_pfn))
            # each section's excluded pages come as one bitmap, cleared from bm2 in whole (no Python work
            # per run: a filled guest's cache and user pages make hundreds of thousands of runs)
            for first, bits in cls.excluded_bitmaps(runs):
                lo = first >> 3
                hi = min(lo + len(bits), len(bm2))
                if lo < hi:
                    kept = int.from_bytes(bm2[lo:hi], "little")
                    bm2[lo:hi] = (kept & ~int.from_bytes(bits[:hi - lo], "little")).to_bytes(hi - lo, "little")
            self.stats.update({f"excluded_{k}": v for k, v in cls.stats.items()})
        for pfn in self.protected:
            if pfn < max_pfn and bm1[pfn >> 3] >> (pfn & 7) & 1:
                _bit(bm2, pfn, True)
        self.phases.add("classify", started, int.from_bytes(bm1, "little").bit_count())
        return bm1, bm2, max_pfn

    def _protected_pfns(self) -> set[int]:
        """Pages every dump keeps whatever the level: the log buffer and init_uts_ns.

        Unused printk descriptors are zero pages; without them -d 1 would leave a dump
        whose log no reader (makedumpfile --dump-dmesg, crash) can read.
        """
        from kexecfw.vmcore.dmesg import log_buffer_extents
        ps = self.page_size
        pfns: set[int] = set()
        try:
            mem = KernelMemory(self.dump)
            extents = log_buffer_extents(mem)
            uts = mem.info.symbol("init_uts_ns")
            if uts is not None:
                extents.append((uts, 512))
            for vaddr, size in extents:
                for va in range(vaddr & ~(ps - 1), vaddr + size, ps):
                    pfns.add(mem.vtop(va) // ps)
        except KexecfwError as e:
            self.stats["protect_warning"] = e.message
        return pfns

    # --- reading and compressing ----------------------------------------------------------
    def _read_pages(self, lo: int, hi: int) -> tuple[bytes, list[int] | None]:
        """Pages [lo, hi) and the pfns of those lost (None when all were read: the common case)."""
        ps = self.page_size
        try:
            return self.dump.read_phys(lo * ps, (hi - lo) * ps), None
        except MemoryMissing:
            return self._read_pages_one_by_one(lo, hi)

    def _read_pages_one_by_one(self, lo: int, hi: int) -> tuple[bytes, list[int] | None]:
        """Pages [lo, hi) of which some could not be read: zeros where memory is absent (a page partly
        in a hole: PT_LOADs need not be page aligned), and lost pages counted in ``self.lost``."""
        ps = self.page_size
        out = bytearray()
        lost: list[int] = []
        for pfn in range(lo, hi):
            try:
                out += self.dump.read_phys(pfn * ps, ps)
                continue
            except MemoryLost as e:
                why = e.why
            except MemoryMissing:
                page, why = self._partial_page(pfn)
                if why is None:
                    out += page
                    continue
            self.lost.add(pfn, why)
            lost.append(pfn)
            out += self.zero_page
        return bytes(out), lost or None

    def _partial_page(self, pfn: int) -> tuple[bytes, str | None]:
        """Page ``pfn`` from the pieces of it the dump's ranges cover, zeros elsewhere; with the reason
        a piece was lost (None if none was). The ranges are indexed once, on the first such page."""
        if self._range_index is None:
            ranges = self.dump.ranges()
            self._range_index = ([r.start for r in ranges], ranges)
        starts, ranges = self._range_index
        ps = self.page_size
        base = pfn * ps
        page = bytearray(ps)
        i = max(bisect.bisect_right(starts, base) - 1, 0)
        while i < len(ranges) and ranges[i].start < base + ps:
            lo, hi = max(ranges[i].start, base), min(ranges[i].end, base + ps)
            i += 1
            if lo < hi:
                try:
                    page[lo - base:hi - base] = self.dump.read_phys(lo, hi - lo)
                except MemoryLost as e:
                    return self.zero_page, e.why
                except MemoryMissing:
                    pass
        return bytes(page), None

    def _compress_chunk(self, raw: bytes) -> tuple[list[tuple[bool, bytes, int]], float, int]:
        """Each page of ``raw`` as (is zero, payload, page_desc flags); the seconds it took and how many
        pages were compressed (not zero)."""
        started = time.perf_counter()
        fn = getattr(self._local, "fn", None)
        if fn is None:
            fn = self._local.fn = self.make_compress()
        flag = self.flag
        ps = self.page_size
        zero = self.zero_page
        view = memoryview(raw)      # pages handed to the engine without a copy
        out = []
        append = out.append
        zero_result = (True, b"", 0)
        zeros = 0
        for at in range(0, len(raw), ps):
            if raw.startswith(zero, at):
                append(zero_result)
                zeros += 1
                continue
            if flag:
                c = fn(view[at:at + ps])
                if len(c) < ps:
                    append((False, c, flag))
                    continue
            append((False, raw[at:at + ps], 0))
        return out, time.perf_counter() - started, len(out) - zeros

    def _chunks(self, bm2: bytearray, max_pfn: int) -> Iterator[tuple[int, int]]:
        for lo, hi in _runs(bytes(bm2), max_pfn):
            for a in range(lo, hi, CHUNK_PAGES):
                yield a, min(a + CHUNK_PAGES, hi)

    def _compressed(self, bm2: bytearray, max_pfn: int):
        """(lo, hi, results) per chunk, in order, compressing ahead on the pool."""
        phases = self.phases
        if self.threads == 1:
            # One CPU (a capture kernel booted with maxcpus=1 or nr_cpus=1): a pool would not
            # compress faster, and each thread's malloc arena fragments, which made the peak RSS
            # grow with the dump (+2 MiB from a 1 GiB to an 8 GiB guest); inline it stays flat.
            for lo, hi in self._chunks(bm2, max_pfn):
                started = mark()
                raw, lost = self._read_pages(lo, hi)
                phases.add("read", started, hi - lo)
                started = mark()
                results, _, compressed = self._compress_chunk(raw)
                phases.add("compress", started, compressed)
                del raw     # before the next read: malloc reuses its memory (else new pages each chunk)
                yield lo, hi, _mark_lost(results, lo, lost)
            return

        def result(fut) -> list[tuple[bool, bytes, int]]:
            started = mark()
            results, seconds, compressed = fut.result()
            phases.add("compress", started, compressed)     # waited for on this thread
            phases.add_thread_time("compress", seconds)
            return results

        from concurrent.futures import ThreadPoolExecutor     # (with logging: not imported for one CPU)
        window = 2 * self.threads + 2
        pending: list = []
        with ThreadPoolExecutor(self.threads) as pool:
            for lo, hi in self._chunks(bm2, max_pfn):
                started = mark()
                raw, lost = self._read_pages(lo, hi)
                phases.add("read", started, hi - lo)
                pending.append((lo, hi, lost, pool.submit(self._compress_chunk, raw)))
                del raw
                if len(pending) >= window:
                    lo0, hi0, lost0, fut = pending.pop(0)
                    yield lo0, hi0, _mark_lost(result(fut), lo0, lost0)
            for lo0, hi0, lost0, fut in pending:
                yield lo0, hi0, _mark_lost(result(fut), lo0, lost0)

    # --- output -----------------------------------------------------------------------
    def write(self, out: str) -> dict:
        """Write the dump to ``out`` (atomically); return statistics. Raises DumpIncomplete on a full disk."""
        out = os.path.abspath(out)
        directory = os.path.dirname(out)
        if not os.path.isdir(directory):
            raise BadInputError(f"directory {directory} does not exist")
        tmp = os.path.join(directory, f".{os.path.basename(out)}.{os.getpid()}.partial")
        remove_stale_partials(directory, os.path.basename(out))
        t0 = time.monotonic()
        since = mark()
        with _file_size_signal_ignored():
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise output_error(e, f"cannot create a file in {directory}") from None
            complete = False
            try:
                os.fchmod(fd, 0o600)
                output = FileOutput(fd, self.byte_limit)
                complete = self._write_elf(output) if self.elf else self._write_kdump(output)
                try:
                    started = mark()
                    os.fsync(fd)
                    self.phases.add("sync", started)
                except OSError as e:
                    if e.errno not in NO_SPACE_ERRNOS:
                        raise
                    self.stopped = self.stopped or _no_space_why(e)
                    complete = False
            except OSError as e:
                os.close(fd)
                os.unlink(tmp)
                raise output_error(e, f"writing {out} failed") from None
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
        os.close(fd)
        complete = self._count_lost(complete)
        if not complete and os.stat(tmp).st_size == 0:
            os.unlink(tmp)
            raise DumpIncomplete(f"{self.stopped or 'the disk filled up'} before anything could be written: "
                                 f"nothing was saved, the dump is incomplete (no {out} left)")
        final = out if complete else out + ".incomplete"
        os.replace(tmp, final)
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        self._timings(t0, since)
        self.stats["path"] = final
        self.stats["bytes"] = os.stat(final).st_blocks * 512
        self.stats["size"] = os.stat(final).st_size
        if not complete:
            raise DumpIncomplete(self._incomplete_message(final))
        return self.stats

    def write_flat(self, fd: int, name: str) -> dict:
        """Write the dump to ``fd`` as makedumpfile's flattened stream (``-F``, see FlatStream) without
        ever seeking it: into a pipe (ssh's stdin) or stdout, with no local file. ``name`` is how the
        stream's destination is shown (statistics' ``path``, messages). Returns statistics (``size``: the
        bytes sent). When the stream could not take everything (its reader went away: ``stream_cut``;
        ``byte_limit`` reached; a full disk behind it) or pages were lost, DumpIncomplete is raised: what
        was sent says incomplete (its header record does, or it has no end marker), and the caller must
        name the destination incomplete."""
        if self.elf:
            raise BadInputError("a flattened stream holds a kdump-compressed dump, not an ELF one: drop --elf")
        t0 = time.monotonic()
        since = mark()
        stream = None
        with _file_size_signal_ignored():
            try:
                stream = FlatStream(fd, self.byte_limit)
                complete = self._write_kdump(stream)
                if stream.cut is None:
                    stream.end()
            except _NoSpace as e:          # the flat header or the end marker could not be written
                self.stopped = self.stopped or e.args[0]
                complete = False
            except OSError as e:
                raise output_error(e, f"writing {name} failed") from None
        complete = self._count_lost(complete)
        self._timings(t0, since)
        sent = stream.sent if stream is not None else 0
        self.stats.update({"path": name, "size": sent, "flat_bytes": sent})
        if stream is not None and stream.cut is not None:
            self.stats["stream_cut"] = stream.cut
        if not complete:
            raise DumpIncomplete(self._incomplete_message(name, sent=True))
        return self.stats

    def _count_lost(self, complete: bool) -> bool:
        """The pages lost on the way into the statistics; whether the dump is still complete."""
        self.stats["pages_lost"] = self.lost.pages + self.dump.lost_pages()
        if self.lost.pages:
            self.stats["lost_ranges"] = [f"{a:#x}..{b:#x}" for a, b in self.lost.physical(self.page_size)]
            self.stats["lost_runs"] = self.lost.runs
            return False
        return complete

    def _timings(self, t0: float, since) -> None:
        self.stats["seconds"] = round(time.monotonic() - t0, 3)
        self.stats["engine"] = self.describe_engine()
        self.stats["threads"] = self.threads
        self.stats["phases"] = self.phases.report(since)

    def _incomplete_message(self, final: str, sent: bool = False) -> str:
        written = self.stats.get("pages_written", 0)
        planned = self.stats.get("pages_planned", 0) - self.stats.get("pages_zero_excluded", 0)
        why = [w for w in (self.input_missing, self.lost.pages and self.lost.describe(self.page_size),
                           self.stopped) if w]
        self.stats["incomplete"] = "; ".join(why)
        holds = "was sent" if sent else "holds"       # a stream: what its reader kept is not known here
        if written == 0:
            held = f"{holds} no page (nothing of the memory could be written)"
        elif written == planned and self.stopped is None:
            held = f"{holds} the {written} pages there are"
        elif self.stopped is None:
            held = f"{holds} the {written} of {planned} pages that could be read"
        else:
            held = f"{holds} {written} of {planned} pages"
        return f"{'; '.join(why)}: {final} {held} and is marked incomplete"

    def _header(self, status: int, sub_hdr_size: int, bitmap_blocks: int, max_pfn: int, dumpable: int) -> bytes:
        try:
            uts = KernelMemory(self.dump).utsname_raw()
        except KexecfwError:
            rel = (self.dump.vmcoreinfo.osrelease or "").encode()[:64]
            uts = b"Linux".ljust(65, b"\0") + bytes(65) + rel.ljust(65, b"\0") + bytes(65 * 3)
        now = time.time()
        return DISK_DUMP_HEADER.pack(KDUMP_SIGNATURE, HEADER_VERSION, uts, int(now), int(now % 1 * 1e6),
                                     status, self.page_size, sub_hdr_size, bitmap_blocks,
                                     min(max_pfn, 0xFFFFFFFF), min(dumpable, 0xFFFFFFFF), 0, 0,
                                     self.panic_cpu, len(self.dump.prstatus_notes()))

    def _phys_base(self) -> int:
        # the architecture's translator knows it (x86_64 phys_base, arm64 PHYS_OFFSET, riscv64 phys_ram_base:
        # makedumpfile reads mem_section through it)
        return translator_for(self.dump.machine, self.dump.vmcoreinfo).phys_base

    def _write_kdump(self, out) -> bool:
        ps = self.page_size
        bm1, bm2, max_pfn = self._bitmaps()
        planned = int.from_bytes(bm2, "little").bit_count()
        self.stats.update({"format": "kdump", "compression": self.codec, "dump_level": self.level,
                           "max_pfn": max_pfn, "pages_present": int.from_bytes(bm1, "little").bit_count(),
                           "pages_planned": planned})
        blob, vi_off, vi_size = notes_blob(self.dump.notes)
        sub_hdr_size = -(-(KDUMP_SUB_HEADER.size + len(blob)) // ps)
        bitmap_len = -(-len(bm1) // ps) * ps or ps
        bitmap_blocks = 2 * bitmap_len // ps
        bitmap_at = (1 + sub_hdr_size) * ps
        desc_at = bitmap_at + 2 * bitmap_len
        data_at = desc_at + -(-planned * PAGE_DESC.size // ps) * ps
        note_at = ps + KDUMP_SUB_HEADER.size
        sub = KDUMP_SUB_HEADER.pack(self._phys_base() & ((1 << 64) - 1), self.level, 0, 0, min(max_pfn, 0xFFFFFFFF),
                                    note_at + vi_off if vi_off is not None else 0, vi_size,
                                    note_at, len(blob), 0, 0, 0, max_pfn, max_pfn)
        status = CODEC_FLAGS[self.codec] | DUMP_DH_COMPRESSED_INCOMPLETE
        try:
            out.write(self._header(status, sub_hdr_size, bitmap_blocks, max_pfn, planned), 0)
            out.write(sub + blob, ps)
            out.write(bytes(bm1).ljust(bitmap_len, b"\0"), bitmap_at)
            out.write(bytes(bm2).ljust(bitmap_len, b"\0"), bitmap_at + bitmap_len)
        except _NoSpace as e:
            self.stopped = e.args[0]
            self.stats["pages_written"] = 0
            return False
        # room for the closing rewrites of the 2nd bitmap and the header (and a stream's end marker)
        out.reserve(bitmap_len + DISK_DUMP_HEADER.size + 3 * 16)
        data_pos = data_at
        desc_pos = desc_at
        progress = PageProgress(self.progress_enabled, planned, ps)
        done = 0
        flushed = data_pos
        complete = True
        zero_excluded = 0
        try:
            # the one stored zero page every kept zero page points to (as makedumpfile does)
            c = self.make_compress()(self.zero_page) if CODEC_FLAGS[self.codec] else self.zero_page
            flag = CODEC_FLAGS[self.codec] if len(c) < ps else 0
            c = c if flag else self.zero_page
            out.write(c, data_pos)
            zero_desc = PAGE_DESC.pack(data_pos, len(c), flag, 0)
            data_pos += len(c)
            phases = self.phases
            for lo, hi, results in self._compressed(bm2, max_pfn):
                started = mark()
                data = bytearray()
                descs = bytearray()
                for i, (is_zero, payload, flag) in enumerate(results):
                    if is_zero:
                        if flag < 0:                                # lost: not in the output
                            _bit(bm2, lo + i, False)
                            continue
                        if self.level & DL_EXCLUDE_ZERO and lo + i not in self.protected:
                            _bit(bm2, lo + i, False)        # -d 1: zero pages are not dumped
                            zero_excluded += 1
                            continue
                        descs += zero_desc
                        continue
                    descs += PAGE_DESC.pack(data_pos + len(data), len(payload), flag, 0)
                    data += payload
                # data first, then the descriptors that point at it
                out.write(data, data_pos)
                out.write(descs, desc_pos)
                data_pos += len(data)
                desc_pos += len(descs)
                phases.add("write", started, len(descs) // PAGE_DESC.size)
                if data_pos - flushed >= FLUSH_BYTES:
                    started = mark()
                    out.flush()
                    phases.add("sync", started)
                    flushed = data_pos
                done += len(results)
                progress.update(done)
        except _NoSpace as e:
            self.stopped = e.args[0]
            complete = False
            # Pages from the failed chunk on were not described: drop them from the 2nd bitmap.
            n_desc = (desc_pos - desc_at) // PAGE_DESC.size
            kept = 0
            for lo, hi in list(_runs(bytes(bm2), max_pfn)):
                for pfn in range(lo, hi):
                    if kept < n_desc:
                        kept += 1
                    else:
                        _bit(bm2, pfn, False)
        progress.update(done, force=True)
        self.stats["pages_written"] = (desc_pos - desc_at) // PAGE_DESC.size
        self.stats["pages_zero_excluded"] = zero_excluded
        self.stats["data_bytes"] = data_pos - data_at
        complete = complete and self.input_missing is None and not self.lost.pages
        status = CODEC_FLAGS[self.codec] | (0 if complete else DUMP_DH_COMPRESSED_INCOMPLETE)
        try:
            # Both rewrites land on blocks allocated at the start (a file) or on the room kept back for
            # them (a stream): they work on a full disk too.
            out.write(bytes(bm2).ljust(bitmap_len, b"\0"), bitmap_at + bitmap_len, closing=True)
            out.write(self._header(status, sub_hdr_size, bitmap_blocks, max_pfn, self.stats["pages_written"]), 0,
                      closing=True)
        except _NoSpace as e:
            self.stopped = self.stopped or e.args[0]
            return False
        return complete

    def _write_elf(self, out) -> bool:
        """ELF dump laid out like /proc/vmcore: a PT_NOTE, a PT_LOAD per run of dumped pages at its
        direct-map address, and PT_LOADs for the kernel image at its virtual addresses (sharing the
        file data of the runs), so that vaddr-based readers (vmcore-dmesg) work. Zero pages are holes."""
        ps = self.page_size
        bm1, bm2, max_pfn = self._bitmaps()
        runs = list(_runs(bytes(bm2), max_pfn))
        page_offset, image = None, None
        try:
            from kexecfw.vmcore.kmem import kernel_layout
            layout = kernel_layout(KernelMemory(self.dump))
            page_offset, image = layout["page_offset"], layout["image"]
        except KexecfwError as e:
            self.stats["layout_warning"] = e.message
        blob, _, _ = notes_blob(self.dump.notes)
        pieces = []                                   # (vaddr, paddr, size) of the image PT_LOADs
        if image is not None:
            iv, ip, isz = image
            for lo, hi in runs:
                a, b = max(lo * ps, ip), min(hi * ps, ip + isz)
                if a < b:
                    pieces.append((iv + a - ip, a, b - a))
        nph = 1 + len(pieces) + len(runs)
        phoff = ELF64_EHDR.size
        note_at = phoff + nph * ELF64_PHDR.size
        data_at = -(-(note_at + len(blob)) // ps) * ps
        phdrs = [ELF64_PHDR.pack(PT_NOTE, 0, note_at, 0, 0, len(blob), len(blob), 0)]
        offsets = {}
        pos = data_at
        for lo, hi in runs:
            offsets[lo] = pos
            pos += (hi - lo) * ps
        run_starts = [lo * ps for lo, _ in runs]
        import bisect
        for v, p, size in pieces:
            lo = runs[bisect.bisect_right(run_starts, p) - 1][0]
            phdrs.append(ELF64_PHDR.pack(PT_LOAD, 7, offsets[lo] + p - lo * ps, v, p, size, size, 0))
        for lo, hi in runs:
            paddr = lo * ps
            vaddr = (page_offset + paddr) & ((1 << 64) - 1) if page_offset is not None else 0
            size = (hi - lo) * ps
            phdrs.append(ELF64_PHDR.pack(PT_LOAD, 7, offsets[lo], vaddr, paddr, size, size, 0))
        ident = b"\x7fELF\x02\x01\x01" + bytes(9)
        ehdr = ELF64_EHDR.pack(ident, ET_CORE, self.dump.machine, 1, 0, phoff, 0, 0, ELF64_EHDR.size,
                               ELF64_PHDR.size, min(nph, 0xFFFF), 0, 0, 0)
        planned = sum(hi - lo for lo, hi in runs)
        self.stats.update({"format": "elf", "dump_level": self.level, "pages_planned": planned})
        progress = PageProgress(self.progress_enabled, planned, ps)
        done = 0
        try:
            out.write(ehdr + b"".join(phdrs) + blob, 0)
            pos = data_at
            for lo, hi in runs:
                for a in range(lo, hi, CHUNK_PAGES):
                    b = min(a + CHUNK_PAGES, hi)
                    started = mark()
                    raw, _ = self._read_pages(a, b)          # lost pages stay holes (zeros)
                    self.phases.add("read", started, b - a)
                    started = mark()
                    written = 0
                    for i in range(b - a):
                        if not raw.startswith(self.zero_page, i * ps):
                            out.write(raw[i * ps:(i + 1) * ps], pos + i * ps)
                            written += 1
                    self.phases.add("write", started, written)
                    pos += (b - a) * ps
                    done += b - a
                    progress.update(done)
            out.truncate(pos)
        except _NoSpace as e:
            self.stopped = e.args[0]
            progress.update(done, force=True)
            self.stats["pages_written"] = done - self.lost.pages
            return False
        progress.update(done, force=True)
        self.stats["pages_written"] = done - self.lost.pages
        return self.input_missing is None and not self.lost.pages


def flatten(src: str, dst_fd: int, piece: int = 1 << 20) -> None:
    """Write the kdump file ``src`` to ``dst_fd`` as a FlatStream: its pieces in order, all-zero ones left
    out (readers and ``makedumpfile -R`` rebuild them as holes), and its last byte so that the rebuilt file
    has the full length. (A save streams with DumpWriter.write_flat: no file first.)"""
    try:
        stream = FlatStream(dst_fd)
        with open(src, "rb") as f:
            offset = 0
            while True:
                data = f.read(piece)
                if not data:
                    break
                if data.count(0) != len(data) or offset == 0:
                    stream.write(data, offset)
                offset += len(data)
            if offset:
                f.seek(offset - 1)
                stream.write(f.read(1), offset - 1)
        stream.end()
    except _NoSpace as e:
        raise KexecfwError(f"flattening {src} stopped: {e.args[0]}", ExitCode.INCOMPLETE) from None


@contextmanager
def _file_size_signal_ignored() -> Iterator[None]:
    """SIGXFSZ ignored (on the main thread, where signals can be set): a file past the size limit
    is then EFBIG, handled as a full disk, instead of killing the process."""
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN) if threading.current_thread() is \
        threading.main_thread() else None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGXFSZ, old)


def _no_space_why(e: OSError) -> str:
    return "the output reached the file size limit" if e.errno == errno.EFBIG else "the disk filled up"


def output_error(e: OSError, what: str) -> KexecfwError:
    """``e`` from creating or writing output as one line with its exit code (errors.exit_code_of:
    permission for a denied or read-only target, no space for a full disk)."""
    return KexecfwError(f"{what}: {e.strerror}", exit_code_of(e))
