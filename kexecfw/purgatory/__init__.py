"""Link a relocatable purgatory object (ET_REL) at its load address.

The purgatory is the small program the kernel jumps to after kexec: it checks
the sha256 of every other segment, then enters the next kernel. We ship it as
a relocatable object and link it here, because its address is only known once
the segments are planned. Steps (kexec-tools' elf_rel_load does the same job):

1. lay out the SHF_ALLOC sections (PROGBITS first, NOBITS last) with their alignment;
2. resolve symbols (section-relative values become addresses);
3. apply each RELA entry with the arch plugin's formula (``kexecfw_relocation_types``);
   an unknown type is refused by name;
4. write the values the arch plugin asked for (``PurgatoryObject.symbols``);
5. later, once every other segment is final, fill the sha256 regions.

The symbol shared by every architecture's purgatory (see verify.c), one entry per other segment:
``purgatory_sha256_regions``: struct { uint64_t start, bufsz, memsz; uint8_t digest[32]; } [16]
(the purgatory hashes bufsz bytes at start and checks that the rest, up to memsz, is zero).
"""
from __future__ import annotations

import io
import struct

from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.model import KEXEC_SEGMENT_MAX, RelocationApplier
from kexecfw.purgatory.elfrel import (ET_NAMES, ET_REL, SHN_ABS, SHT_NOBITS, SHT_REL, SHT_RELA, STT_FUNC,
                                      STT_NOTYPE, STT_OBJECT, Rela, RelocatableElf, Section, Symbol,
                                      machine_name)
from kexecfw.records import Record, fresh
from kexecfw.segments.plan import Segment

SHF_ALLOC = 0x2
# The linked image's bound: the purgatory takes tens of KiB (its stack included); sizes and alignments
# read from the object are checked against this before anything is allocated.
MAX_PURGATORY_SIZE = 1 << 20
SHA256_REGIONS = "purgatory_sha256_regions"
# struct sha256_region { uint64_t start, bufsz, memsz; uint8_t digest[32]; } (kexecfw/purgatory/verify.c)
SHA256_REGION = struct.Struct("<QQQ32s")


def signed64(value: int) -> int:
    """``value`` taken modulo 2^64 and read as a signed 64-bit number (a relocation's S + A - P)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def check_field(buf: bytearray | memoryview, offset: int, width: int, name: str, place: int) -> None:
    """Refuse a relocation whose ``width``-byte field at ``offset`` does not lie inside ``buf`` (its section)."""
    if offset + width > len(buf):
        raise BadInputError(f"purgatory relocation {name} at {place:#x}: its {width}-byte field at offset "
                            f"{offset:#x} runs past the end of its section ({len(buf):#x} bytes)")


class PurgatorySymbol(Record, frozen=True):
    name: str
    offset: int       # in the linked image
    size: int


class AppliedRelocation(Record, frozen=True):
    """One relocation as applied: for dry-run output and notebooks."""

    type_name: str
    place: int
    symbol: str
    value: int


class LinkedPurgatory(Record):
    image: bytearray
    base: int
    entry: int
    symbols: dict[str, PurgatorySymbol]
    relocations: list[AppliedRelocation] = fresh(list)
    patched: dict[str, bytes] = fresh(dict)

    def address_of(self, name: str) -> int:
        return self.base + self._symbol(name).offset

    def _symbol(self, name: str) -> PurgatorySymbol:
        try:
            return self.symbols[name]
        except KeyError:
            raise KexecfwError(f"the purgatory object has no symbol {name!r}; rebuild it (make purgatory)") from None

    def patch(self, name: str, value: bytes) -> None:
        sym = self._symbol(name)
        if sym.size and len(value) > sym.size:
            raise KexecfwError(f"purgatory symbol {name} holds {sym.size} bytes, not {len(value)}")
        self.image[sym.offset:sym.offset + len(value)] = value
        self.patched[name] = bytes(value)

    def fill_sha256(self, segments: list[Segment], skip: bool) -> None:
        """The regions covering ``segments`` (all but the purgatory; a big one may take several, see
        kexecfw.segments.digest), or none when ``skip``."""
        if len(segments) > KEXEC_SEGMENT_MAX:
            raise KexecfwError(f"{len(segments)} segments to checksum; the purgatory holds {KEXEC_SEGMENT_MAX}")
        regions = bytearray(SHA256_REGION.size * KEXEC_SEGMENT_MAX)
        if not skip:
            from kexecfw.segments.digest import sha256_regions  # here: --skip-sha256 starts no threads
            for i, region in enumerate(sha256_regions(segments, KEXEC_SEGMENT_MAX)):
                SHA256_REGION.pack_into(regions, i * SHA256_REGION.size, *region)
        self.patch(SHA256_REGIONS, bytes(regions))


class PurgatoryLayout:
    """A parsed relocatable object with its sections laid out (size known before placement)."""

    def __init__(self, elf: bytes, machine: int) -> None:
        self.elf = RelocatableElf(elf, "the purgatory object")
        if self.elf.type != ET_REL:
            raise BadInputError(f"the purgatory is {ET_NAMES.get(self.elf.type, self.elf.type)}, "
                                "not a relocatable object (ET_REL)")
        if self.elf.machine != machine:
            raise BadInputError(f"the purgatory is built for {machine_name(self.elf.machine)}, not this architecture")
        self._layout()

    def _layout(self) -> None:
        sections = [s for s in self.elf.sections if s.flags & SHF_ALLOC]
        ordered = [s for s in sections if s.type != SHT_NOBITS] + [s for s in sections if s.type == SHT_NOBITS]
        self.offsets: dict[int, int] = {}
        self.align = 1
        pos = 0
        for sec in ordered:
            align = max(sec.addralign, 1)
            if align & (align - 1) or align > MAX_PURGATORY_SIZE:
                raise BadInputError(f"the purgatory object's section {sec.name or sec.index} has alignment "
                                    f"{sec.addralign:#x}, not a power of two up to {MAX_PURGATORY_SIZE:#x}")
            self.align = max(self.align, align)
            pos = (pos + align - 1) // align * align
            self.offsets[sec.index] = pos
            pos += sec.size
            if pos > MAX_PURGATORY_SIZE:
                raise BadInputError(f"the purgatory object's sections end at {pos:#x} with "
                                    f"{sec.name or sec.index}, past the {MAX_PURGATORY_SIZE >> 20} MiB "
                                    "a purgatory may take (a real one takes tens of KiB)")
        self.size = pos

    def link(self, base: int, relocation_types: dict[int, tuple[str, RelocationApplier]],
             entry_symbol: str) -> LinkedPurgatory:
        elf = self.elf
        image = bytearray(self.size)
        for index, offset in self.offsets.items():
            sec = elf.sections[index]
            if sec.type != SHT_NOBITS:
                image[offset:offset + sec.size] = elf.section_data(sec)
        symtab = elf.symtab()
        if symtab is None:
            raise BadInputError("the purgatory object has no symbol table")
        table = elf.symbols(symtab)
        addresses: list[int | None] = []
        symbols: dict[str, PurgatorySymbol] = {}
        for sym in table:
            if sym.shndx == SHN_ABS:
                addresses.append(sym.value)
            elif sym.shndx in self.offsets:
                sec = elf.sections[sym.shndx]
                if sym.value + sym.size > sec.size:
                    raise BadInputError(f"the purgatory object's symbol {sym.name or '(unnamed)'} "
                                        f"({sym.value:#x}, {sym.size} bytes) lies past the end of its "
                                        f"section {sec.name} ({sec.size:#x} bytes)")
                off = self.offsets[sym.shndx] + sym.value
                addresses.append(base + off)
                if sym.name and sym.type in (STT_OBJECT, STT_FUNC, STT_NOTYPE):
                    symbols[sym.name] = PurgatorySymbol(sym.name, off, sym.size)
            else:
                addresses.append(None)  # undefined/common/non-alloc: an error only if a relocation uses it
        applied: list[AppliedRelocation] = []
        with memoryview(image) as whole:
            for rel_sec in elf.sections:
                if rel_sec.type not in (SHT_REL, SHT_RELA):
                    continue
                if rel_sec.info not in self.offsets:
                    continue  # relocations of debug or non-loaded sections
                if rel_sec.type != SHT_RELA:
                    raise BadInputError(f"{rel_sec.name}: REL relocations are not supported; build with RELA")
                target = elf.sections[rel_sec.info]
                tgt_off = self.offsets[target.index]
                # The applier sees only the target section: a field past its end is refused there.
                with whole[tgt_off:tgt_off + target.size] as view:
                    for rel in elf.relocations(rel_sec):
                        applied.append(self._apply(rel, target, view, base + tgt_off, table, addresses,
                                                   relocation_types))
        if entry_symbol not in symbols:
            raise KexecfwError(f"the purgatory object has no entry symbol {entry_symbol!r}")
        return LinkedPurgatory(image, base, base + symbols[entry_symbol].offset, symbols, applied)

    def _apply(self, rel: Rela, target: Section, view: memoryview, target_base: int, table: list[Symbol],
               addresses: list[int | None], relocation_types: dict[int, tuple[str, RelocationApplier]]
               ) -> AppliedRelocation:
        """Apply one RELA entry of ``target`` (its bytes are ``view``, loaded at ``target_base``)."""
        if rel.sym >= len(table):
            raise BadInputError(f"a purgatory relocation (type {rel.type}) in section {target.name} refers to "
                                f"symbol {rel.sym}, but the symbol table has {len(table)}")
        sym = table[rel.sym]
        sym_name = sym.name or f"section {sym.shndx}"
        if rel.type not in relocation_types:
            raise KexecfwError(f"purgatory relocation {_relocation_name(rel.type, self.elf.data)} "
                               f"(type {rel.type}) against {sym.name or 'a section'} is not supported")
        name, apply = relocation_types[rel.type]
        s = addresses[rel.sym]
        if s is None:
            raise KexecfwError(f"purgatory symbol {sym.name!r} is undefined; rebuild the purgatory")
        if rel.offset >= target.size:
            raise BadInputError(f"purgatory relocation {name} against {sym_name} is at offset {rel.offset:#x}, "
                                f"past the end of section {target.name} ({target.size:#x} bytes)")
        value = (s + rel.addend) & ((1 << 64) - 1)
        place = target_base + rel.offset
        try:
            apply(view, rel.offset, place, value)
        except BadInputError as e:
            raise BadInputError(f"{e.message} (symbol {sym_name}, section {target.name})") from None
        return AppliedRelocation(name, place, sym_name, value)


def _relocation_name(rtype: int, elf: bytes) -> str:
    """R_* name of a relocation type, for the error message of an unsupported one: pyelftools knows
    every architecture's names, and this error path can afford importing it."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.descriptions import describe_reloc_type
    from elftools.elf.elffile import ELFFile
    try:
        return describe_reloc_type(rtype, ELFFile(io.BytesIO(elf)))
    except (ELFError, struct.error, ValueError, KeyError):  # a damaged object: the number says enough
        return "of an unknown type"
