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
from kexecfw.vmcore.bounds import LOG_BUF_LEN_MAX, PRB_AVGBITS, check_count, check_extent
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
# The text ring is at most LOG_BUF_LEN_MAX bytes, with one descriptor per 2^PRB_AVGBITS of them.
MAX_SIZE_BITS = LOG_BUF_LEN_MAX.bit_length() - 1
MAX_COUNT_BITS = MAX_SIZE_BITS - PRB_AVGBITS
LOG = "cannot read the kernel log"


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


class _PrbRing(TupleRecord):
    """Where the lockless ring's arrays are and how big (kernel/printk/printk_ringbuffer.h), checked
    against the kernel's limits and the dump once, before any record is read."""
    __slots__ = ()
    prb_ptr: int        # SYMBOL(prb): the pointer to the ring
    prb: int            # the struct printk_ringbuffer it points to
    rb_size: int
    count: int          # descriptors and infos: 1 << desc_ring.count_bits
    descs_va: int
    desc_size: int
    infos_va: int
    info_size: int
    head_id: int
    tail_id: int
    text_va: int
    ring_size: int      # bytes of text: 1 << text_data_ring.size_bits


def _prb_ring(mem: KernelMemory) -> _PrbRing:
    c = mem.checked
    o_counter = c.offset("atomic_long_t.counter", 8, 8) or 0
    prb_ptr = c.need_symbol("prb", LOG)
    prb = mem.read_u64(prb_ptr)
    rb_size = c.need_size("printk_ringbuffer", why=LOG)
    rb = mem.read(prb, rb_size)
    desc_ring = c.need_offset("printk_ringbuffer.desc_ring", rb_size, why=LOG)
    data_ring = c.need_offset("printk_ringbuffer.text_data_ring", rb_size, why=LOG)

    def field(base: int, name: str, layout: struct.Struct) -> int:
        """A field of the struct at ``base`` in ``rb`` (its offset checked against what follows base)."""
        return layout.unpack_from(rb, base + c.need_offset(name, rb_size - base, layout.size, LOG))[0]

    count_bits = check_count(field(desc_ring, "prb_desc_ring.count_bits", _U32), MAX_COUNT_BITS,
                             "printk ring buffer desc_ring.count_bits")
    size_bits = check_count(field(data_ring, "prb_data_ring.size_bits", _U32), MAX_SIZE_BITS,
                            "printk ring buffer text_data_ring.size_bits")
    count = 1 << count_bits
    desc_size = c.need_size("prb_desc", why=LOG)
    info_size = c.need_size("printk_info", why=LOG)
    check_extent(count * desc_size, mem.memory_bytes, f"the printk descriptor ring ({count} descriptors)")
    check_extent(count * info_size, mem.memory_bytes, f"the printk info ring ({count} infos)")
    ring_size = check_extent(1 << size_bits, mem.memory_bytes, "the printk text data ring")
    return _PrbRing(prb_ptr, prb, rb_size, count,
                    field(desc_ring, "prb_desc_ring.descs", _U64), desc_size,
                    field(desc_ring, "prb_desc_ring.infos", _U64), info_size,
                    field(desc_ring + o_counter, "prb_desc_ring.head_id", _U64) & DESC_ID_MASK,
                    field(desc_ring + o_counter, "prb_desc_ring.tail_id", _U64) & DESC_ID_MASK,
                    field(data_ring, "prb_data_ring.data", _U64), ring_size)


def _prb_records(mem: KernelMemory, warn: Warn) -> Iterator[Record]:
    c = mem.checked
    ring = _prb_ring(mem)
    count, desc_size, info_size, ring_size = ring.count, ring.desc_size, ring.info_size, ring.ring_size
    o_counter = c.offset("atomic_long_t.counter", 8, 8) or 0
    o_state = c.need_offset("prb_desc.state_var", desc_size - o_counter, 8, LOG) + o_counter
    o_lpos = c.need_offset("prb_desc.text_blk_lpos", desc_size, 16, LOG)
    o_begin = c.need_offset("prb_data_blk_lpos.begin", 16, 8, LOG)
    o_next = c.need_offset("prb_data_blk_lpos.next", 16, 8, LOG)
    o_seq = c.need_offset("printk_info.seq", info_size, 8, LOG)
    o_ts = c.need_offset("printk_info.ts_nsec", info_size, 8, LOG)
    o_len = c.need_offset("printk_info.text_len", info_size, 2, LOG)
    o_caller = c.offset("printk_info.caller_id", info_size, 4)
    # facility and level (u8, then u8 flags:5 level:3) follow text_len; not exported, so only
    # trusted when caller_id sits right after them as in every kernel since 5.10.
    has_level = o_caller == o_len + 4

    head_id, tail_id = ring.head_id, ring.tail_id
    n = (head_id - tail_id) & DESC_ID_MASK
    if n >= count:
        warn(f"printk ring buffer: head id {head_id} and tail id {tail_id} are {n} apart in a ring "
             f"of {count}; reading the last {count} records")
        tail_id = (head_id - count + 1) & DESC_ID_MASK
        n = count - 1
    # Only the descriptors and infos of ids tail..head: a young log uses a fraction of the ring.
    # The text ring is read whole, in one read.
    first = tail_id % count
    descs = _entry_fields(_ring_entries(mem, ring.descs_va, desc_size, count, first, n + 1), desc_size, "prb_desc", [
        ("state_var", o_state, "Q"), ("text_blk_lpos.begin", o_lpos + o_begin, "Q"),
        ("text_blk_lpos.next", o_lpos + o_next, "Q")])
    info_fields = [("seq", o_seq, "Q"), ("ts_nsec", o_ts, "Q"), ("text_len", o_len, "H")]
    if has_level:
        info_fields += [("facility", o_len + 2, "B"), ("flags", o_len + 3, "B")]
    if o_caller is not None:
        info_fields.append(("caller_id", o_caller, "I"))      # last, where the kernel has it
    infos = _entry_fields(_ring_entries(mem, ring.infos_va, info_size, count, first, n + 1), info_size,
                          "printk_info", info_fields)
    text = mem.read(ring.text_va, ring_size, excluded_as_zero=True)
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


def _log_buf(mem: KernelMemory) -> tuple[int, int]:
    """Address and length of the log buffer before 5.10 (``log_buf``, ``log_buf_len``), checked."""
    c = mem.checked
    log_buf = mem.read_u64(c.need_symbol("log_buf", LOG))
    buf_len = mem.read_u32(c.need_symbol("log_buf_len", LOG))
    if buf_len == 0:
        raise BadInputError("log_buf_len is 0: the dump is corrupt")
    check_count(buf_len, LOG_BUF_LEN_MAX, "log_buf_len")
    return log_buf, check_extent(buf_len, mem.memory_bytes, "the log buffer (log_buf_len)")


def _structured_records(mem: KernelMemory, warn: Warn) -> Iterator[Record]:
    c = mem.checked
    log_buf, buf_len = _log_buf(mem)
    first = mem.read_u32(c.need_symbol("log_first_idx", LOG))
    nxt = mem.read_u32(c.need_symbol("log_next_idx", LOG))
    # struct printk_log (struct log before 3.11): ts_nsec (u64), len and text_len (u16)
    name = "printk_log" if "SIZE(printk_log)" in mem.info else "log"
    rec_size = c.need_size(name, why=LOG)
    o_ts = c.need_offset(f"{name}.ts_nsec", rec_size, 8, LOG)
    o_len = c.need_offset(f"{name}.len", rec_size, 2, LOG)
    o_tlen = c.need_offset(f"{name}.text_len", rec_size, 2, LOG)
    buf = mem.read(log_buf, buf_len)
    idx = first
    seq = 0
    for _ in range(buf_len // rec_size + 1):
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
    log_buf, buf_len = _log_buf(mem)
    log_end = mem.read_u32(mem.checked.need_symbol("log_end", LOG))
    buf = mem.read(log_buf, buf_len)
    wrap = log_end % buf_len
    ordered = buf[wrap:] + buf[:wrap]
    logged = min(log_end, buf_len)
    return ordered[buf_len - logged:]


def log_buffer_extents(mem: KernelMemory) -> list[tuple[int, int]]:
    """(vaddr, size) of the memory holding the log: what a dump must keep for dmesg to work."""
    if log_kind(mem) != "lockless":
        return [_log_buf(mem)]
    ring = _prb_ring(mem)
    return [(ring.prb_ptr, 8), (ring.prb, ring.rb_size), (ring.descs_va, ring.count * ring.desc_size),
            (ring.infos_va, ring.count * ring.info_size), (ring.text_va, ring.ring_size)]


def log_kind(mem: KernelMemory) -> str:
    """Which log buffer the crashed kernel had: "lockless", "structured" or "legacy"."""
    info = mem.info
    if "SYMBOL(prb)" in info:
        return "lockless"
    if "SYMBOL(log_first_idx)" in info:
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
