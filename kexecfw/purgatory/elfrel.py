"""Read a relocatable ELF64 object (ET_REL): its sections, symbols and RELA entries.

What the purgatory linker needs, read with explicit struct layouts (Elf64_Shdr, Elf64_Sym,
Elf64_Rela from include/uapi/linux/elf.h) rather than pyelftools: in a TCG guest, importing
pyelftools and parsing the purgatory with it took longer than the rest of a ``load -p`` plan.
Little-endian only, like every architecture kexecfw loads.
"""
from __future__ import annotations

import struct
from typing import Iterator

from kexecfw.elfnotes import ELF64_EHDR, ELFCLASS64, ELFDATA2LSB, ELFMAG
from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord

ET_REL = 1
ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
EM_NAMES = {62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2

# struct elf64_shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
# sh_addralign, sh_entsize
ELF64_SHDR = struct.Struct("<IIQQQQIIQQ")
# struct elf64_sym: st_name, st_info, st_other, st_shndx, st_value, st_size
ELF64_SYM = struct.Struct("<IBBHQQ")
# struct elf64_rela: r_offset, r_info (symbol index << 32 | type), r_addend
ELF64_RELA = struct.Struct("<QQq")


class Section(TupleRecord):
    """One Elf64_Shdr, with its index and its name from the section header string table."""
    __slots__ = ()
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    addralign: int


class Symbol(TupleRecord):
    """One Elf64_Sym."""
    __slots__ = ()
    name: str
    value: int
    size: int
    type: int       # ELF64_ST_TYPE(st_info)
    shndx: int      # the raw st_shndx (SHN_* or a section index)


class Rela(TupleRecord):
    """One Elf64_Rela."""
    __slots__ = ()
    offset: int
    sym: int        # ELF64_R_SYM(r_info)
    type: int       # ELF64_R_TYPE(r_info)
    addend: int


def machine_name(machine: int) -> str:
    return EM_NAMES.get(machine, f"e_machine {machine}")


class RelocatableElf:
    """The section headers of ``data`` parsed; symbols and relocations on request."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        if len(data) < ELF64_EHDR.size or data[:4] != ELFMAG:
            raise BadInputError(f"{what} is not an ELF file (no ELF magic)")
        if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
            raise BadInputError(f"{what} is not a 64-bit little-endian ELF file")
        (_, self.type, self.machine, _, _, _, shoff, _, _, _, _, shentsize, shnum,
         shstrndx) = ELF64_EHDR.unpack_from(data)
        if shnum and shentsize != ELF64_SHDR.size:
            raise BadInputError(f"{what}: section header size {shentsize} is not {ELF64_SHDR.size}")
        self._check(shoff, shnum * ELF64_SHDR.size, "the section header table")
        headers = [ELF64_SHDR.unpack_from(data, shoff + i * ELF64_SHDR.size) for i in range(shnum)]
        unnamed = [Section(i, "", *h[1:9]) for i, h in enumerate(headers)]
        for section in unnamed:
            if section.type != SHT_NOBITS:
                self._check(section.offset, section.size, f"section {section.index}")
        names = self._bytes(unnamed[shstrndx]) if shstrndx < shnum else b""
        self.sections = [s._replace(name=_cstring(names, h[0])) for s, h in zip(unnamed, headers)]

    def section_data(self, section: Section) -> bytes:
        """The file bytes of ``section`` (b"" for SHT_NOBITS)."""
        return b"" if section.type == SHT_NOBITS else self._bytes(section)

    def symtab(self) -> Section | None:
        return next((s for s in self.sections if s.type == SHT_SYMTAB), None)

    def symbols(self, symtab: Section) -> list[Symbol]:
        """The entries of ``symtab`` in index order (relocations refer to them by index)."""
        names = self._bytes(self.sections[symtab.link]) if symtab.link < len(self.sections) else b""
        return [Symbol(_cstring(names, name), value, size, info & 0xF, shndx)
                for name, info, _, shndx, value, size in self._entries(symtab, ELF64_SYM)]

    def relocations(self, section: Section) -> list[Rela]:
        """The entries of an SHT_RELA section."""
        return [Rela(offset, info >> 32, info & 0xFFFFFFFF, addend)
                for offset, info, addend in self._entries(section, ELF64_RELA)]

    def _entries(self, section: Section, layout: struct.Struct) -> "Iterator[tuple]":
        table = self._bytes(section)
        if len(table) % layout.size:
            raise BadInputError(f"{self.what}: section {section.name} is not a whole number of "
                                f"{layout.size}-byte entries")
        return layout.iter_unpack(table)

    def _bytes(self, section: Section) -> bytes:
        self._check(section.offset, section.size, f"section {section.name or section.index}")
        return self.data[section.offset:section.offset + section.size]

    def _check(self, offset: int, size: int, what: str) -> None:
        if offset + size > len(self.data):
            raise BadInputError(f"{self.what} is truncated: {what} ends at {offset + size:#x}, "
                                f"past its {len(self.data):#x} bytes")


def _cstring(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")
