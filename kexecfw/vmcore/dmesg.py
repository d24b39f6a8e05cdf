"""The crashed kernel's log, read from its memory with VMCOREINFO only.

Three generations of the kernel's log buffer:

* the lockless ring buffer ``prb`` (5.10 and later; kernel/printk/printk_ringbuffer.h): a
  descriptor ring (``struct prb_desc``: state_var, text_blk_lpos), an info array
  (``struct printk_info``: seq, ts_nsec, text_len, caller_id ...) and a text data
  ring of blocks that start with the descriptor id. Every size and offset comes
  from VMCOREINFO (the layouts moved between releases, e.g. 5.18).
* the structured buffer (3.5 to 5.9; ``struct printk_log`` records in ``log_buf``,
  ``log_first_idx`` .. ``log_next_idx``, a zero ``len`` marks the wrap);
* the legacy character buffer (before 3.5; ``log_buf``, ``log_end``, ``logged_chars``).

The default output is byte-identical to kexec-tools' vmcore-dmesg: ``[%5lu.%06lu] ``
then the record's text with bytes that are neither printable nor space in the C
locale written as ``\\xNN``, one line per record. ``kernel_style`` prefixes every
line of a multi-line record like the kernel's syslog/console output does, with
optional ``<level>`` and caller id (``[T123]`` / ``[C1]``); ``makedumpfile`` gives
makedumpfile 1.7.2's ``--dump-dmesg`` format (continuation lines indented).

Big arrays (descriptors, infos, text) are read with pages the dump level filtered out
as zeros: they are static kernel data, so only ever excluded for being zero pages
(makedumpfile's own -d 31 dumps need this; kexecfw's keep the log pages anyway).

A corrupt record (descriptor id mismatch, text outside the ring) is skipped and
reported through ``warn`` with its sequence number and descriptor index.
"""
from __future__ import annotations

import struct

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the dmesg path does not import typing

from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcoreinfo import struct_layout

if TYPE_CHECKING:
    from typing import Callable, Iterator

    Warn = Callable[[str], None]

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
# Bytes vmcore-dmesg escapes: not isprint() and not isspace() in the C locale. (No `re`: the
# dmesg path keeps its imports to what it needs.)
_PRINTABLE = bytes(range(0x09, 0x0E)) + bytes(range(0x20, 0x7F))

# kernel/printk/printk_ringbuffer.h: the top two bits of a 64-bit state_var are the state.
DESC_FLAGS_SHIFT = 62
DESC_ID_MASK = (1 << DESC_FLAGS_SHIFT) - 1
DESC_COMMITTED = 1
DESC_FINALIZED = 2
CALLER_ID_CPU = 0x80000000
MAX_TEXT_RING = 1 << 31       # bigger than any log_buf_len the kernel accepts: corrupt count/size bits


class Record(TupleRecord):
    """One log record."""
    __slots__ = ()
    seq: int
    ts_nsec: int
    text: bytes
    caller_id: int | None = None    # caller_id, level and facility when the log format has them
    level: int | None = None
    facility: int | None = None


def _ignore(_: str) -> None:
    pass


def _need(info, getter: str, name: str) -> int:
    value = getattr(info, getter)(name)
    if value is None:
        family = {"symbol": "SYMBOL", "offset": "OFFSET", "size": "SIZE"}[getter]
        raise BadInputError(f"VMCOREINFO lacks {family}({name}): cannot read the kernel log")
    return value


def _prb_records(mem: KernelMemory, warn: Warn) -> Iterator[Record]:
    info = mem.info
    o_counter = info.offset("atomic_long_t.counter") or 0
    prb = mem.read_u64(_need(info, "symbol", "prb"))
    rb = mem.read(prb, _need(info, "size", "printk_ringbuffer"))
    desc_ring = _need(info, "offset", "printk_ringbuffer.desc_ring")
    data_ring = _need(info, "offset", "printk_ringbuffer.text_data_ring")

    def u64(buf: bytes, off: int) -> int:
        if off + 8 > len(buf):
            raise BadInputError(f"VMCOREINFO offset {off} lies outside its struct ({len(buf)} bytes)")
        return _U64.unpack_from(buf, off)[0]

    def u32(buf: bytes, off: int) -> int:
        if off + 4 > len(buf):
            raise BadInputError(f"VMCOREINFO offset {off} lies outside its struct ({len(buf)} bytes)")
        return _U32.unpack_from(buf, off)[0]

    count_bits = u32(rb, desc_ring + _need(info, "offset", "prb_desc_ring.count_bits"))
    if count_bits > 30:
        raise BadInputError(f"printk ring buffer: count_bits {count_bits} is not plausible (corrupt prb?)")
    count = 1 << count_bits
    descs_va = u64(rb, desc_ring + _need(info, "offset", "prb_desc_ring.descs"))
    infos_va = u64(rb, desc_ring + _need(info, "offset", "prb_desc_ring.infos"))
    head_id = u64(rb, desc_ring + _need(info, "offset", "prb_desc_ring.head_id") + o_counter)
    tail_id = u64(rb, desc_ring + _need(info, "offset", "prb_desc_ring.tail_id") + o_counter)
    size_bits = u32(rb, data_ring + _need(info, "offset", "prb_data_ring.size_bits"))
    ring_size = 1 << min(size_bits, 63)
    if ring_size > MAX_TEXT_RING:
        raise BadInputError(f"printk ring buffer: text ring of 2^{size_bits} bytes is not plausible")
    text_va = u64(rb, data_ring + _need(info, "offset", "prb_data_ring.data"))

    desc_size = _need(info, "size", "prb_desc")
    info_size = _need(info, "size", "printk_info")
    o_state = _need(info, "offset", "prb_desc.state_var") + o_counter
    o_lpos = _need(info, "offset", "prb_desc.text_blk_lpos")
    o_begin = _need(info, "offset", "prb_data_blk_lpos.begin")
    o_next = _need(info, "offset", "prb_data_blk_lpos.next")
    o_seq = _need(info, "offset", "printk_info.seq")
    o_ts = _need(info, "offset", "printk_info.ts_nsec")
    o_len = _need(info, "offset", "printk_info.text_len")
    o_caller = info.offset("printk_info.caller_id")
    # facility and level (u8, then u8 flags:5 level:3) follow text_len; not exported, so only
    # trusted when caller_id sits right after them as in every kernel since 5.10.
    has_level = o_caller == o_len + 4

    head_id &= DESC_ID_MASK
    tail_id &= DESC_ID_MASK
    n = (head_id - tail_id) & DESC_ID_MASK
    if n >= count:
        warn(f"printk ring buffer: head id {head_id} and tail id {tail_id} are {n} apart in a ring "
             f"of {count}; reading the last {count} records")
        tail_id = (head_id - count + 1) & DESC_ID_MASK
        n = count - 1
    # Only the descriptors and infos of ids tail..head: a young log uses a fraction of the ring.
    # The text ring is read whole, in one read.
    first = tail_id % count
    descs = _entry_fields(_ring_entries(mem, descs_va, desc_size, count, first, n + 1), desc_size, "prb_desc", [
        ("state_var", o_state, "Q"), ("text_blk_lpos.begin", o_lpos + o_begin, "Q"),
        ("text_blk_lpos.next", o_lpos + o_next, "Q")])
    info_fields = [("seq", o_seq, "Q"), ("ts_nsec", o_ts, "Q"), ("text_len", o_len, "H")]
    if has_level:
        info_fields += [("facility", o_len + 2, "B"), ("flags", o_len + 3, "B")]
    if o_caller is not None:
        info_fields.append(("caller_id", o_caller, "I"))      # last, where the kernel has it
    infos = _entry_fields(_ring_entries(mem, infos_va, info_size, count, first, n + 1), info_size, "printk_info",
                          info_fields)
    text = mem.read(text_va, ring_size, excluded_as_zero=True)
    # The loop runs once per record (thousands in a long-running kernel's log) and is most of
    # `vmcore dmesg`'s work: names are bound locally and records made as plain tuple subclasses.
    new_record, unpack_u64, committed = tuple.__new__, _U64.unpack_from, (DESC_COMMITTED, DESC_FINALIZED)
    caller = facility = level = None
    rid = (tail_id - 1) & DESC_ID_MASK
    for (state_var, begin, nxt), inf in zip(descs, infos):
        rid = (rid + 1) & DESC_ID_MASK
        if state_var & DESC_ID_MASK != rid:
            continue   # reused or never written: not an error, the writer was elsewhere
        if (state_var >> DESC_FLAGS_SHIFT) not in committed:
            continue   # reserved (being written) or reusable
        seq, ts, text_len = inf[0], inf[1], inf[2]
        if o_caller is not None:
            caller = inf[-1]
        if has_level:
            facility, level = inf[3], inf[4] >> 5
        body = b""
        if begin & 1 or nxt & 1 or begin == nxt:
            pass   # data-less records (the kernel uses odd lpos values for them): no text
        else:
            if begin // ring_size == nxt // ring_size:      # _text_block's common case, inline
                b_off, n_off = begin % ring_size, nxt % ring_size
            else:
                blk = _text_block(begin, nxt, ring_size)
                if blk is None:
                    warn(f"printk record seq {seq} (descriptor {rid % count}): text block {begin:#x}..{nxt:#x} "
                         "spans more than the ring; skipped")
                    continue
                b_off, n_off = blk
            if n_off - b_off < 8:
                warn(f"printk record seq {seq} (descriptor {rid % count}): text block too short; skipped")
                continue
            blk_id = unpack_u64(text, b_off)[0]
            if blk_id & DESC_ID_MASK != rid:
                warn(f"printk record seq {seq} (descriptor {rid % count}): text block at {b_off:#x} belongs to "
                     f"descriptor id {blk_id:#x}, not {rid:#x}; skipped")
                continue
            body = text[b_off + 8:b_off + 8 + min(text_len, n_off - b_off - 8)]
        yield new_record(Record, (seq, ts, body, caller, level, facility))


def _entry_fields(buf: bytes, entry_size: int, struct_name: str, fields: list[tuple[str, int, str]]) -> Iterator[tuple]:
    """For each ``entry_size``-byte entry of the array in ``buf``, the values of ``fields`` ((name,
    offset, struct format character) each) in the order given: one unpack per entry, not one per
    field (the per-field unpacks were half of the record loop)."""
    layout, names = struct_layout(struct_name, entry_size, fields)
    rows = layout.iter_unpack(buf)
    if names == [name for name, _, _ in fields]:
        return rows
    order = [names.index(name) for name, _, _ in fields]
    return (tuple([row[i] for i in order]) for row in rows)


def _ring_entries(mem: KernelMemory, base: int, size: int, count: int, first: int, n: int) -> bytes:
    """Entries first, first + 1 ... (``n`` of them, wrapping at ``count``) of a ring array at ``base``."""
    head = min(n, count - first)
    out = mem.read(base + first * size, head * size, excluded_as_zero=True)
    if n > head:
        out += mem.read(base, (n - head) * size, excluded_as_zero=True)
    return out


def _text_block(begin: int, nxt: int, ring_size: int) -> tuple[int, int] | None:
    """Ring offsets [start, end) of the data block at logical positions begin..nxt, or None when
    it spans more than the ring (corrupt)."""
    b_off = begin % ring_size
    if begin // ring_size == nxt // ring_size:
        return b_off, nxt % ring_size
    if (begin + ring_size) // ring_size == nxt // ring_size:
        return 0, nxt % ring_size      # a wrapping block keeps its data at the start
    return None


def _structured_records(mem: KernelMemory, warn: Warn) -> Iterator[Record]:
    info = mem.info
    log_buf = mem.read_u64(_need(info, "symbol", "log_buf"))
    buf_len = mem.read_u32(_need(info, "symbol", "log_buf_len"))
    first = mem.read_u32(_need(info, "symbol", "log_first_idx"))
    nxt = mem.read_u32(_need(info, "symbol", "log_next_idx"))
    rec_size = info.size("printk_log") or info.size("log")
    o_ts = info.offset("printk_log.ts_nsec") if info.offset("printk_log.ts_nsec") is not None \
        else info.offset("log.ts_nsec")
    o_len = info.offset("printk_log.len") if info.offset("printk_log.len") is not None \
        else info.offset("log.len")
    o_tlen = info.offset("printk_log.text_len") if info.offset("printk_log.text_len") is not None \
        else info.offset("log.text_len")
    if rec_size is None or o_ts is None or o_len is None or o_tlen is None:
        raise BadInputError("VMCOREINFO lacks SIZE(printk_log) or its offsets: cannot read the kernel log")
    if not 0 < buf_len <= MAX_TEXT_RING:
        raise BadInputError(f"log_buf_len {buf_len} is not plausible (corrupt dump?)")
    buf = mem.read(log_buf, buf_len)
    idx = first
    seq = 0
    for _ in range(buf_len // max(rec_size, 1) + 1):
        if idx == nxt:
            return
        if idx + rec_size > buf_len:
            warn(f"log_buf record at offset {idx:#x} runs past the buffer ({buf_len:#x}); stopping")
            return
        ts = _U64.unpack_from(buf, idx + o_ts)[0]
        length = _U16.unpack_from(buf, idx + o_len)[0]
        text_len = _U16.unpack_from(buf, idx + o_tlen)[0]
        if length == 0:
            idx = 0          # end-of-buffer marker: continue at the start
            continue
        if idx + rec_size + text_len > buf_len or length < rec_size:
            warn(f"log_buf record at offset {idx:#x}: length {length} / text {text_len} do not fit; stopping")
            return
        yield Record(seq, ts, buf[idx + rec_size:idx + rec_size + text_len])
        seq += 1
        idx += length
    warn("log_buf: records never reached log_next_idx; output may be incomplete")


def _legacy_text(mem: KernelMemory) -> bytes:
    info = mem.info
    log_buf = mem.read_u64(_need(info, "symbol", "log_buf"))
    log_end = mem.read_u32(_need(info, "symbol", "log_end"))
    buf_len = mem.read_u32(_need(info, "symbol", "log_buf_len"))
    if not 0 < buf_len <= MAX_TEXT_RING:
        raise BadInputError(f"log_buf_len {buf_len} is not plausible (corrupt dump?)")
    buf = mem.read(log_buf, buf_len)
    wrap = log_end % buf_len
    ordered = buf[wrap:] + buf[:wrap]
    logged = min(log_end, buf_len)
    return ordered[buf_len - logged:]


def log_buffer_extents(mem: KernelMemory) -> list[tuple[int, int]]:
    """(vaddr, size) of the memory holding the log: what a dump must keep for dmesg to work."""
    info = mem.info
    kind = log_kind(mem)
    if kind != "lockless":
        log_buf = mem.read_u64(_need(info, "symbol", "log_buf"))
        return [(log_buf, mem.read_u32(_need(info, "symbol", "log_buf_len")))]
    prb_ptr = _need(info, "symbol", "prb")
    prb = mem.read_u64(prb_ptr)
    rb_size = _need(info, "size", "printk_ringbuffer")
    rb = mem.read(prb, rb_size)
    dr = _need(info, "offset", "printk_ringbuffer.desc_ring")
    tr = _need(info, "offset", "printk_ringbuffer.text_data_ring")
    count = 1 << min(_U32.unpack_from(rb, dr + _need(info, "offset", "prb_desc_ring.count_bits"))[0], 30)
    size = 1 << min(_U32.unpack_from(rb, tr + _need(info, "offset", "prb_data_ring.size_bits"))[0], 31)
    return [(prb_ptr, 8), (prb, rb_size),
            (_U64.unpack_from(rb, dr + _need(info, "offset", "prb_desc_ring.descs"))[0],
             count * _need(info, "size", "prb_desc")),
            (_U64.unpack_from(rb, dr + _need(info, "offset", "prb_desc_ring.infos"))[0],
             count * _need(info, "size", "printk_info")),
            (_U64.unpack_from(rb, tr + _need(info, "offset", "prb_data_ring.data"))[0], size)]


def log_kind(mem: KernelMemory) -> str:
    """Which log buffer the crashed kernel had: "lockless", "structured" or "legacy"."""
    info = mem.info
    if info.symbol("prb") is not None:
        return "lockless"
    if info.symbol("log_first_idx") is not None:
        return "structured"
    return "legacy"


def records(mem: KernelMemory, warn: Warn = _ignore) -> Iterator[Record]:
    """The log's records, oldest first (not for the legacy buffer, which has no records)."""
    kind = log_kind(mem)
    if kind == "lockless":
        return _prb_records(mem, warn)
    if kind == "structured":
        return _structured_records(mem, warn)
    raise BadInputError("this kernel has the legacy (pre-3.5) log buffer, which has no records")


def _escape(text: bytes) -> bytes:
    if not text.translate(None, _PRINTABLE):
        return text
    # Rare (a few records of a log at most): byte by byte, no table built at import.
    return b"".join(text[i:i + 1] if b in _PRINTABLE else b"\\x%02x" % b for i, b in enumerate(text))


def _stamp(ts_nsec: int) -> bytes:
    sec, rem = divmod(ts_nsec, 1_000_000_000)
    return b"[%5d.%06d]" % (sec, rem // 1000)


def format_record_makedumpfile(rec: Record) -> bytes:
    """One record the way ``makedumpfile --dump-dmesg`` (1.7.2, Debian 12) prints it: continuation
    lines indented under the text."""
    head = _stamp(rec.ts_nsec) + b" "
    indent = b"\n" + b" " * len(head)
    return head + _escape(rec.text).replace(b"\n", indent) + b"\n"


def format_record(rec: Record, kernel_style: bool = False, show_level: bool = False,
                  show_caller: bool = False) -> bytes:
    """One record as text, ending with a newline."""
    if not kernel_style and not show_level and not show_caller:
        return _stamp(rec.ts_nsec) + b" " + _escape(rec.text) + b"\n"
    prefix = b""
    if show_level and rec.level is not None:
        prefix += b"<%d>" % (((rec.facility or 0) << 3) | rec.level)
    prefix += _stamp(rec.ts_nsec)
    if show_caller and rec.caller_id is not None:
        kind = b"C" if rec.caller_id & CALLER_ID_CPU else b"T"
        prefix += b"[%6s]" % (kind + b"%d" % (rec.caller_id & ~CALLER_ID_CPU))
    prefix += b" "
    lines = _escape(rec.text).split(b"\n")
    return b"".join(prefix + line + b"\n" for line in lines)


def dmesg_bytes(mem: KernelMemory, warn: Warn = _ignore, kernel_style: bool = False,
                show_level: bool = False, show_caller: bool = False, makedumpfile: bool = False) -> bytes:
    """The whole log, formatted (see the module docstring)."""
    if log_kind(mem) == "legacy":
        return _legacy_text(mem)
    if makedumpfile:
        return b"".join(format_record_makedumpfile(r) for r in records(mem, warn))
    if kernel_style or show_level or show_caller:
        return b"".join(format_record(r, kernel_style, show_level, show_caller) for r in records(mem, warn))
    # vmcore-dmesg's format, format_record's first case inlined: once per record, the bulk of the work
    lines = []
    for rec in records(mem, warn):
        text = rec[2]
        if text.translate(None, _PRINTABLE):
            text = _escape(text)
        sec, nsec = divmod(rec[1], 1_000_000_000)
        lines.append(b"[%5d.%06d] %s\n" % (sec, nsec // 1000, text))
    return b"".join(lines)


def dmesg_text(mem: KernelMemory, warn: Warn = _ignore) -> str:
    return dmesg_bytes(mem, warn).decode("utf-8", "replace")
