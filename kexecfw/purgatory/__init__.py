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
5. later, once every other segment is final, fill the sha256 regions and digest.

Symbols shared by every architecture's purgatory (see verify.c):
``purgatory_sha256_regions``: struct { uint64_t start, len; } [16];
``purgatory_sha256_digest``: uint8_t[32].
"""
from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field

from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.model import KEXEC_SEGMENT_MAX, RelocationApplier
from kexecfw.segments.plan import Segment

SHF_ALLOC = 0x2
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
SHA256_REGIONS = "purgatory_sha256_regions"
SHA256_DIGEST = "purgatory_sha256_digest"
# struct sha256_region { uint64_t start; uint64_t len; } (kexecfw/purgatory/sha256.h)
SHA256_REGION = struct.Struct("<QQ")


@dataclass(frozen=True)
class PurgatorySymbol:
    name: str
    offset: int       # in the linked image
    size: int


@dataclass(frozen=True)
class AppliedRelocation:
    """One relocation as applied: for dry-run output and notebooks."""

    type_name: str
    place: int
    symbol: str
    value: int


@dataclass
class LinkedPurgatory:
    image: bytearray
    base: int
    entry: int
    symbols: dict[str, PurgatorySymbol]
    relocations: list[AppliedRelocation] = field(default_factory=list)
    patched: dict[str, bytes] = field(default_factory=dict)

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
        """Regions and digest over ``segments`` (all but the purgatory), or zeros when ``skip``."""
        if len(segments) > KEXEC_SEGMENT_MAX:
            raise KexecfwError(f"{len(segments)} segments to checksum; the purgatory holds {KEXEC_SEGMENT_MAX}")
        regions = bytearray(SHA256_REGION.size * KEXEC_SEGMENT_MAX)
        digest = bytes(32)
        if not skip:
            h = hashlib.sha256()
            for i, seg in enumerate(segments):
                h.update(seg.buf)
                h.update(bytes(seg.memsz - seg.bufsz))
                SHA256_REGION.pack_into(regions, i * SHA256_REGION.size, seg.mem, seg.memsz)
            digest = h.digest()
        self.patch(SHA256_REGIONS, bytes(regions))
        self.patch(SHA256_DIGEST, digest)


class PurgatoryLayout:
    """A parsed relocatable object with its sections laid out (size known before placement)."""

    def __init__(self, elf: bytes, machine: int) -> None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        try:
            self.elf = ELFFile(io.BytesIO(elf))
            if self.elf["e_type"] != "ET_REL":
                raise BadInputError(f"the purgatory is {self.elf['e_type']}, not a relocatable object (ET_REL)")
            if self.elf["e_machine"] != _machine_name(self.elf, machine):
                raise BadInputError(f"the purgatory is built for {self.elf['e_machine']}, not this architecture")
            self._layout()
        except (ELFError, struct.error) as e:
            raise BadInputError(f"the purgatory object is not a valid ELF file: {e}") from None

    def _layout(self) -> None:
        sections = [(i, s) for i, s in enumerate(self.elf.iter_sections()) if s["sh_flags"] & SHF_ALLOC]
        ordered = ([x for x in sections if x[1]["sh_type"] != "SHT_NOBITS"]
                   + [x for x in sections if x[1]["sh_type"] == "SHT_NOBITS"])
        self.offsets: dict[int, int] = {}
        self.align = 1
        pos = 0
        for index, sec in ordered:
            align = max(sec["sh_addralign"], 1)
            self.align = max(self.align, align)
            pos = (pos + align - 1) // align * align
            self.offsets[index] = pos
            pos += sec["sh_size"]
        self.size = pos

    def link(self, base: int, relocation_types: dict[int, tuple[str, RelocationApplier]],
             entry_symbol: str) -> LinkedPurgatory:
        from elftools.elf.descriptions import describe_reloc_type
        from elftools.elf.relocation import RelocationSection
        image = bytearray(self.size)
        for index, offset in self.offsets.items():
            sec = self.elf.get_section(index)
            if sec["sh_type"] != "SHT_NOBITS":
                image[offset:offset + sec["sh_size"]] = sec.data()
        symtab = self.elf.get_section_by_name(".symtab")
        if symtab is None:
            raise BadInputError("the purgatory object has no symbol table")
        addresses: list[int | None] = []
        symbols: dict[str, PurgatorySymbol] = {}
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if shndx == "SHN_ABS":
                addresses.append(sym["st_value"])
            elif isinstance(shndx, int) and shndx in self.offsets:
                off = self.offsets[shndx] + sym["st_value"]
                addresses.append(base + off)
                if sym.name and sym["st_info"]["type"] in ("STT_OBJECT", "STT_FUNC", "STT_NOTYPE"):
                    symbols[sym.name] = PurgatorySymbol(sym.name, off, sym["st_size"])
            else:
                addresses.append(None)  # undefined/common/non-alloc: an error only if a relocation uses it
        applied: list[AppliedRelocation] = []
        for rel_sec in self.elf.iter_sections():
            if not isinstance(rel_sec, RelocationSection):
                continue
            target = rel_sec["sh_info"]
            if target not in self.offsets:
                continue  # relocations of debug or non-loaded sections
            if not rel_sec.is_RELA():
                raise BadInputError(f"{rel_sec.name}: REL relocations are not supported; build with RELA")
            tgt_off = self.offsets[target]
            for rel in rel_sec.iter_relocations():
                rtype = rel["r_info_type"]
                sym = symtab.get_symbol(rel["r_info_sym"])
                if rtype not in relocation_types:
                    raise KexecfwError(f"purgatory relocation {describe_reloc_type(rtype, self.elf)} "
                                       f"(type {rtype}) against {sym.name or 'a section'} is not supported")
                name, apply = relocation_types[rtype]
                s = addresses[rel["r_info_sym"]]
                if s is None:
                    raise KexecfwError(f"purgatory symbol {sym.name!r} is undefined; rebuild the purgatory")
                place_off = tgt_off + rel["r_offset"]
                value = (s + rel["r_addend"]) & ((1 << 64) - 1)
                apply(image, place_off, base + place_off, value)
                applied.append(AppliedRelocation(name, base + place_off, sym.name or f"section {sym['st_shndx']}",
                                                 value))
        if entry_symbol not in symbols:
            raise KexecfwError(f"the purgatory object has no entry symbol {entry_symbol!r}")
        return LinkedPurgatory(image, base, base + symbols[entry_symbol].offset, symbols, applied)


def _machine_name(elf: "object", machine: int) -> str:
    from elftools.elf.descriptions import describe_e_machine
    names = {62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}
    return names.get(machine, describe_e_machine(machine))
