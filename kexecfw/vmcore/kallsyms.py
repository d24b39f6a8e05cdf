"""Kernel symbols from the dump itself: the kallsyms tables VMCOREINFO points at (kernel 6.0+).

Layout (kernel/kallsyms.c, scripts/kallsyms.c):

* ``kallsyms_num_syms``: unsigned int;
* ``kallsyms_names``: per symbol a length (one byte, or two when the first has bit 7 set:
  ``(b0 & 0x7f) | b1 << 7``, 6.1+) then that many token indices;
* ``kallsyms_token_table`` / ``kallsyms_token_index``: 256 NUL-terminated tokens and their
  u16 offsets; the expanded name's first character is the symbol type (``T``, ``t`` ...);
* ``kallsyms_offsets`` (s32) + ``kallsyms_relative_base``: address = base + (u32)offset, except
  with absolute per-CPU symbols (x86_64 SMP) where a non-negative offset is the address itself
  and a negative one means ``base - 1 - offset``.

Symbols are sorted by address, so a pc resolves by bisection. Only what ``vmcore notes``
needs: no module symbols.
"""
from __future__ import annotations

import bisect
import struct

from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.machines import machine_capture
from kexecfw.vmcore.kmem import KernelMemory

MAX_SYMS = 1 << 22                  # a kernel with every option has ~300,000
MAX_NAMES_BYTES = 64 << 20          # kallsyms_names of MAX_SYMS symbols of ~16 compressed bytes


class Kallsyms:
    def __init__(self, mem: KernelMemory) -> None:
        c = mem.checked
        why = "no symbol names (kernels before 6.0)"
        names = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index",
                 "kallsyms_offsets", "kallsyms_relative_base")
        sym = {n: c.need_symbol(n, why) for n in names}
        num = mem.read_u32(sym["kallsyms_num_syms"])
        if not 0 < num < MAX_SYMS:
            raise BadInputError(f"kallsyms_num_syms {num} is not plausible (max {MAX_SYMS})")
        base = mem.read_u64(sym["kallsyms_relative_base"])
        offsets = struct.unpack(f"<{num}i", mem.read(sym["kallsyms_offsets"], 4 * num))
        capture = machine_capture(mem.dump.machine)
        absolute_percpu = capture is not None and capture.kallsyms_absolute_percpu
        mask = (1 << 64) - 1
        if absolute_percpu:
            self.addrs = [o if o >= 0 else (base - 1 - o) & mask for o in offsets]
        else:
            self.addrs = [(base + (o & 0xFFFFFFFF)) & mask for o in offsets]
        index = struct.unpack("<256H", mem.read(sym["kallsyms_token_index"], 512))
        table_len = max(index) + 64
        table = mem.read(sym["kallsyms_token_table"], table_len)
        tokens = []
        for off in index:
            end = table.find(b"\0", off)
            tokens.append(table[off:end if end != -1 else len(table)])
        # the names run up to the next kallsyms table in memory (at most MAX_NAMES_BYTES)
        after = [v for n, v in sym.items() if v > sym["kallsyms_names"]]
        size = (min(after) - sym["kallsyms_names"]) if after else num * 32
        blob = mem.read(sym["kallsyms_names"], min(size, MAX_NAMES_BYTES))
        names: list[bytes] = []
        get = tokens.__getitem__
        pos = 0
        end = len(blob) - 1            # the last position a length byte (or its second byte) may take
        for _ in range(num):
            if pos > end:
                raise BadInputError(f"kallsyms_names ends early, after {len(names)} of {num} symbols "
                                    "(corrupt dump?)")
            n = blob[pos]
            pos += 1
            if n & 0x80:               # a two-byte length (6.1+)
                if pos > end:
                    raise BadInputError("kallsyms_names ends inside a symbol's length (corrupt dump?)")
                n = (n & 0x7F) | (blob[pos] << 7)
                pos += 1
            names.append(b"".join(map(get, blob[pos:pos + n])))      # token indices are bytes: always valid
            pos += n
        order = sorted(range(num), key=self.addrs.__getitem__)
        self.addrs = [self.addrs[i] for i in order]
        self._names = [names[i] for i in order]     # type character + name, decoded on use

    @property
    def names(self) -> list[str]:
        return [n[1:].decode("utf-8", "replace") for n in self._names]

    def _type(self, i: int) -> str:
        return chr(self._names[i][0]) if self._names[i] else "?"

    def lookup(self, addr: int) -> str | None:
        """``name+0xoff`` for a text address, None outside the kernel's symbols."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or self._type(i) not in "tTwW":
            return None
        return f"{self._names[i][1:].decode('utf-8', 'replace')}+{addr - self.addrs[i]:#x}"

    def address(self, name: str) -> int | None:
        want = name.encode()
        for i, n in enumerate(self._names):
            if n[1:] == want:
                return self.addrs[i]
        return None


def load(mem: KernelMemory) -> Kallsyms | None:
    """The kernel's symbols, or None when the dump cannot give them (old kernel, pages filtered out)."""
    try:
        return Kallsyms(mem)
    except KexecfwError:
        return None
