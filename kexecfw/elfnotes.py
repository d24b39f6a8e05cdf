"""ELF notes of core files (/proc/kcore, /proc/vmcore, elfcorehdr): headers and note records.

Only what kexec and kdump need, read with explicit struct layouts so that a
truncated prefix of /proc/kcore (a snapshot keeps the first 64 KiB) is enough.
Layouts: Elf64_Ehdr, Elf64_Phdr, Elf64_Nhdr from include/uapi/linux/elf.h.
"""
from __future__ import annotations

import struct
TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the dmesg path does not import typing

from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord

if TYPE_CHECKING:  # the capture path (vmcore dmesg) must not pay for pathlib or typing
    from typing import Iterator

    from kexecfw.sysroot import Sysroot

ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
NT_PRPSINFO = 3
NT_TASKSTRUCT = 4
NT_AUXV = 6
VMCOREINFO_NOTE_NAME = b"VMCOREINFO"

# struct elf64_hdr: e_ident[16], e_type, e_machine, e_version, e_entry, e_phoff, e_shoff,
# e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
# struct elf64_phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
# struct elf64_note: n_namesz, n_descsz, n_type
ELF64_NHDR = struct.Struct("<III")


# TupleRecord, not dataclasses or namedtuple: `vmcore dmesg` starts as fast as python itself only
# if it imports little beyond what the interpreter has already loaded (see kexecfw.records).
class ProgramHeader(TupleRecord):
    """One Elf64_Phdr."""
    __slots__ = ()
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class ElfCoreHeader(TupleRecord):
    """e_machine, e_type and the program headers."""
    __slots__ = ()
    machine: int
    type: int
    phdrs: tuple[ProgramHeader, ...]


class Note(TupleRecord):
    """One ELF note."""
    __slots__ = ()
    name: bytes         # without the trailing NUL
    type: int
    desc: bytes
    offset: int = 0     # file offset of its header, for error messages


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_elf_header(data: bytes, what: str) -> ElfCoreHeader:
    """Parse the ELF64 little-endian header and program headers at the start of ``data``."""
    if len(data) < ELF64_EHDR.size or data[:4] != ELFMAG:
        raise BadInputError(f"{what} is not an ELF file (no ELF magic)")
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise BadInputError(f"{what} is not a 64-bit little-endian ELF file")
    (_, e_type, e_machine, _, _, e_phoff, _, _, _, e_phentsize, e_phnum, _, _, _) = ELF64_EHDR.unpack_from(data)
    if e_phnum and e_phentsize != ELF64_PHDR.size:
        raise BadInputError(f"{what}: program header size {e_phentsize} is not {ELF64_PHDR.size}")
    end = e_phoff + e_phnum * ELF64_PHDR.size
    if end > len(data):
        raise BadInputError(f"{what} is truncated: its {e_phnum} program headers end at {end:#x}, "
                            f"past the {len(data):#x} bytes read")
    phdrs = tuple(ProgramHeader(*ELF64_PHDR.unpack_from(data, e_phoff + i * ELF64_PHDR.size))
                  for i in range(e_phnum))
    return ElfCoreHeader(e_machine, e_type, phdrs)


def iter_notes(buf: bytes, base_offset: int = 0, what: str = "note segment") -> Iterator[Note]:
    """Yield the notes in one PT_NOTE segment's bytes. Stops at zero padding; raises on overruns."""
    pos = 0
    while pos + ELF64_NHDR.size <= len(buf):
        namesz, descsz, ntype = ELF64_NHDR.unpack_from(buf, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            return  # the kernel pads per-CPU note buffers with zeros (final_note)
        name_at = pos + ELF64_NHDR.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(buf):
            raise BadInputError(f"{what}: note at offset {base_offset + pos:#x} overruns its segment "
                                f"(namesz {namesz}, descsz {descsz})")
        name = bytes(buf[name_at:name_at + namesz]).rstrip(b"\0")
        yield Note(name, ntype, bytes(buf[desc_at:desc_at + descsz]), base_offset + pos)
        pos = end


def read_core_notes(data: bytes, what: str) -> tuple[ElfCoreHeader, list[Note]]:
    """Header and every note of an ELF core held in ``data`` (a prefix is enough if notes fit)."""
    header = parse_elf_header(data, what)
    notes: list[Note] = []
    for ph in header.phdrs:
        if ph.type != PT_NOTE:
            continue
        if ph.offset + ph.filesz > len(data):
            raise BadInputError(f"{what} is truncated: its notes end at {ph.offset + ph.filesz:#x}, "
                                f"past the {len(data):#x} bytes read")
        notes.extend(iter_notes(data[ph.offset:ph.offset + ph.filesz], ph.offset, what))
    return header, notes


def read_kcore_notes(sysroot: "Sysroot", limit: int = 1 << 20) -> tuple[ElfCoreHeader, list[Note]]:
    """The ELF header and notes of the sysroot's proc/kcore (a truncated copy is fine)."""
    path = "proc/kcore"
    data = sysroot.read_bytes(path, limit)
    return read_core_notes(data, sysroot.file(path))

