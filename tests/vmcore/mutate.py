"""Copies of the real mini vmcores with one value changed: a VMCOREINFO line, or bytes of the crashed
kernel's memory (a printk ring field, a kallsyms table, a page-table entry).

The VMCOREINFO note is rewritten in place with its new length (PT_NOTE's p_filesz follows): the
notes segment of /proc/vmcore has room before the first PT_LOAD's data.
"""
from __future__ import annotations

import struct

from kexecfw.elfnotes import (ELF64_EHDR, ELF64_NHDR, ELF64_PHDR, PT_LOAD, PT_NOTE, VMCOREINFO_NOTE_NAME,
                              iter_notes)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _phdrs(data: bytes) -> list[tuple[int, tuple]]:
    ehdr = ELF64_EHDR.unpack_from(data)
    phoff, phnum = ehdr[5], ehdr[10]
    return [(phoff + i * ELF64_PHDR.size, ELF64_PHDR.unpack_from(data, phoff + i * ELF64_PHDR.size))
            for i in range(phnum)]


def vmcoreinfo_text(data: bytes) -> str:
    """The VMCOREINFO note's text of ELF dump ``data``."""
    for _, ph in _phdrs(data):
        if ph[0] == PT_NOTE:
            for note in iter_notes(data[ph[2]:ph[2] + ph[5]]):
                if note.name == VMCOREINFO_NOTE_NAME:
                    return note.desc.decode("ascii")
    raise ValueError("no VMCOREINFO note")


def with_vmcoreinfo(data: bytes, changes: dict[str, str | None]) -> bytes:
    """ELF dump ``data`` with VMCOREINFO keys set to new text values (None: the line removed)."""
    out = bytearray(data)
    for at, ph in _phdrs(data):
        if ph[0] != PT_NOTE:
            continue
        offset, filesz = ph[2], ph[5]
        notes = list(iter_notes(data[offset:offset + filesz]))
        blob = b""
        for note in notes:
            desc = note.desc
            if note.name == VMCOREINFO_NOTE_NAME:
                lines, seen = [], set()
                for line in desc.decode("ascii").splitlines():
                    key = line.partition("=")[0]
                    if key in changes:
                        seen.add(key)
                        if changes[key] is None:
                            continue
                        line = f"{key}={changes[key]}"
                    lines.append(line)
                lines += [f"{k}={v}" for k, v in changes.items() if k not in seen and v is not None]
                desc = ("\n".join(lines) + "\n").encode("ascii")
            name = note.name + b"\0"
            blob += ELF64_NHDR.pack(len(name), len(desc), note.type)
            blob += name.ljust(_align4(len(name)), b"\0") + desc.ljust(_align4(len(desc)), b"\0")
        first_load = min(p[2] for _, p in _phdrs(data) if p[0] == PT_LOAD)
        if offset + len(blob) > first_load:
            raise ValueError("the new notes do not fit before the memory")
        out[offset:offset + max(filesz, len(blob))] = blob.ljust(filesz, b"\0")
        struct.pack_into("<Q", out, at + 32, len(blob))          # p_filesz
        struct.pack_into("<Q", out, at + 40, len(blob))          # p_memsz
        return bytes(out)
    raise ValueError("no PT_NOTE")


def poke_phys(data: bytes, paddr: int, value: bytes) -> bytes:
    """ELF dump ``data`` with ``value`` written at physical address ``paddr`` (inside one PT_LOAD)."""
    for _, ph in _phdrs(data):
        if ph[0] == PT_LOAD and ph[4] <= paddr and paddr + len(value) <= ph[4] + ph[5]:
            at = ph[2] + paddr - ph[4]
            return data[:at] + value + data[at + len(value):]
    raise ValueError(f"physical {paddr:#x} is not in the dump")
