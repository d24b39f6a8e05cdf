"""The log buffers before the lockless ring (3.5-5.9 structured records, and the pre-3.5 text buffer).

No real dump of such a kernel is at hand, so memory is laid out here the way those kernels
did (kernel/printk/printk.c of 5.4: struct printk_log {u64 ts_nsec; u16 len, text_len, dict_len;
u8 facility; u8 flags:5, level:3;} followed by text and dict, padded to 8; a zero len marks the
wrap) and described by the VMCOREINFO keys those kernels exported.
"""
from __future__ import annotations

import struct

from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.dumpfile import DumpFile, MemoryMissing, PhysRange
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcoreinfo import VmcoreInfo

KBASE = 0xFFFFFFFF80000000
PAGE = 4096


class FlatDump(DumpFile):
    format, machine, page_size, path = "test", 62, PAGE, "flat"

    def __init__(self, mem: bytearray, info: str) -> None:
        self.mem, self.notes = mem, []
        self._vmcoreinfo = VmcoreInfo.parse(info)

    def read_phys(self, paddr: int, size: int) -> bytes:
        if paddr + size > len(self.mem):
            raise MemoryMissing(paddr)
        return bytes(self.mem[paddr:paddr + size])

    def ranges(self) -> list[PhysRange]:
        return [PhysRange(0, len(self.mem))]


def record(ts: int, text: bytes) -> bytes:
    size = (16 + len(text) + 7) & ~7
    return struct.pack("<QHHHBB", ts, size, len(text), 0, 0, 6 << 5) + text + bytes(size - 16 - len(text))


def test_structured_log_with_wrap():
    mem = bytearray(4 * PAGE)
    buf_at, buf_len = 2 * PAGE, 256
    recs = [record(1_500_000_000, b"first"), record(2_000_001_000, b"second\nline")]
    tail = record(3_000_000_000, b"after the wrap")
    # first record at 160, then the second; a zero-length marker ends the buffer; the third starts at 0
    first = 160
    body = b"".join(recs)
    mem[buf_at + first:buf_at + first + len(body)] = body
    mem[buf_at:buf_at + len(tail)] = tail
    nxt = len(tail)
    syms = {"log_buf": PAGE, "log_buf_len": PAGE + 8, "log_first_idx": PAGE + 16, "log_next_idx": PAGE + 24}
    struct.pack_into("<Q", mem, syms["log_buf"], KBASE + buf_at)
    struct.pack_into("<I", mem, syms["log_buf_len"], buf_len)
    struct.pack_into("<I", mem, syms["log_first_idx"], first)
    struct.pack_into("<I", mem, syms["log_next_idx"], nxt)
    info = "".join(f"SYMBOL({k})={KBASE + v:x}\n" for k, v in syms.items())
    info += ("SIZE(printk_log)=16\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n"
             "OFFSET(printk_log.text_len)=10\nNUMBER(phys_base)=0\n")
    out = dmesg_bytes(KernelMemory(FlatDump(mem, info)))
    assert out == (b"[    1.500000] first\n[    2.000001] second\nline\n[    3.000000] after the wrap\n")


def test_legacy_text_buffer():
    mem = bytearray(3 * PAGE)
    text = b"<6>hello\n<4>world\n"
    buf_at, buf_len = 2 * PAGE, 64
    mem[buf_at:buf_at + len(text)] = text
    syms = {"log_buf": PAGE, "log_end": PAGE + 8, "log_buf_len": PAGE + 16, "logged_chars": PAGE + 24}
    struct.pack_into("<Q", mem, syms["log_buf"], KBASE + buf_at)
    struct.pack_into("<I", mem, syms["log_end"], len(text))
    struct.pack_into("<I", mem, syms["log_buf_len"], buf_len)
    struct.pack_into("<I", mem, syms["logged_chars"], len(text))
    info = "".join(f"SYMBOL({k})={KBASE + v:x}\n" for k, v in syms.items()) + "NUMBER(phys_base)=0\n"
    assert dmesg_bytes(KernelMemory(FlatDump(mem, info))) == text
