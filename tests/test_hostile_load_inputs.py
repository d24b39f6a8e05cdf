"""Hostile inputs on the load side: each test mutates a real input (or builds a synthetic one) in a known
way and asserts the one-line error it must give, never a traceback or unbounded growth.

Covers the findings of issue 12 outside the vmcore readers: the purgatory linker, crashkernel estimate's
initrd and kernel, firmware memmap and iomem ranges, CPU lists, human_size, capped decompression and the
CLI's --arch handling.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.plugins.arm64 import EM_AARCH64
from kexecfw.plugins.arm64 import PURGATORY_OBJECT as ARM64_PURGATORY
from kexecfw.plugins.arm64.relocations import RELOCATION_TYPES as ARM64_RELOCATIONS
from kexecfw.plugins.x86_64 import EM_X86_64
from kexecfw.plugins.x86_64 import PURGATORY_OBJECT as X86_64_PURGATORY
from kexecfw.plugins.x86_64.relocations import X86_64_RELOCATIONS
from kexecfw.purgatory import PurgatoryLayout
from kexecfw.purgatory.elfrel import ELF64_RELA, ELF64_SHDR, ELF64_SYM, SHT_NOBITS, SHT_RELA, RelocatableElf

# ---- the purgatory linker ------------------------------------------------------------------------------

PURGATORIES = {
    "x86_64": (X86_64_PURGATORY, EM_X86_64, X86_64_RELOCATIONS, "purgatory_start"),
    "arm64": (ARM64_PURGATORY, EM_AARCH64, ARM64_RELOCATIONS, "purgatory_start"),
}


def _link(arch: str, data: bytes) -> None:
    _, machine, types, entry = PURGATORIES[arch]
    PurgatoryLayout(data, machine).link(0x7000_0000, types, entry)


def _first_rela(data: bytes) -> tuple[int, object, object]:
    """(file offset of the first entry of the first .rela section, that section, its target section)."""
    elf = RelocatableElf(data, "purgatory")
    rela = next(s for s in elf.sections if s.type == SHT_RELA and s.size)
    return rela.offset, rela, elf.sections[rela.info]


def _shdr_offset(data: bytes, index: int) -> int:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    return shoff + index * ELF64_SHDR.size


@pytest.fixture(params=sorted(PURGATORIES))
def purgatory(request: pytest.FixtureRequest) -> tuple[str, bytearray]:
    return request.param, bytearray(PURGATORIES[request.param][0].read_bytes())


def test_real_purgatories_link(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    _link(arch, bytes(data))


def test_relocation_symbol_index_past_the_table(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at, _, target = _first_rela(data)
    offset, info, addend = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, offset, (0xFFFFFF << 32) | (info & 0xFFFFFFFF), addend)
    with pytest.raises(BadInputError, match=rf"in section {target.name} refers to symbol 16777215, "
                                            r"but the symbol table has \d+"):
        _link(arch, bytes(data))


def test_relocation_offset_past_its_section(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at, _, target = _first_rela(data)
    _, info, addend = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, 1 << 63, info, addend)
    with pytest.raises(BadInputError, match=rf"is at offset 0x8000000000000000, past the end of section "
                                            rf"{target.name} \({target.size:#x} bytes\)"):
        _link(arch, bytes(data))


def test_relocation_field_straddling_the_end_of_its_section(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at, _, target = _first_rela(data)
    _, info, addend = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, target.size - 1, info, addend)
    with pytest.raises(BadInputError, match=rf"R_\w+ at 0x[0-9a-f]+: its \d-byte field at offset "
                                            rf"{target.size - 1:#x} runs past the end of its section .*"
                                            rf"\(symbol [^,]+, section {target.name}\)"):
        _link(arch, bytes(data))


@pytest.mark.parametrize("arch, rtype, name", [("x86_64", 10, "R_X86_64_32"), ("arm64", 261, "R_AARCH64_PREL32")])
def test_relocation_result_that_does_not_fit_its_field(arch: str, rtype: int, name: str) -> None:
    data = bytearray(PURGATORIES[arch][0].read_bytes())
    at, _, target = _first_rela(data)
    offset, info, _ = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, offset, (info >> 32 << 32) | rtype, 1 << 40)
    with pytest.raises(BadInputError, match=rf"^purgatory relocation {name} at 0x[0-9a-f]+.*"
                                            rf"\(symbol [^,]+, section {target.name}\)$"):
        _link(arch, bytes(data))


def test_section_past_the_end_of_the_file(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at = _shdr_offset(data, 1)
    fields = list(ELF64_SHDR.unpack_from(data, at))
    fields[4] = 0xFFFF_FFFF_FFFF_FF00     # sh_offset
    ELF64_SHDR.pack_into(data, at, *fields)
    with pytest.raises(BadInputError, match=r"is truncated: section 1 ends at 0x1[0-9a-f]{16}, past its"):
        _link(arch, bytes(data))


@pytest.mark.parametrize("field, value, message", [
    (5, 1 << 62, r"sections end at 0x4[0-9a-f]+ with \.bss.*past the 1 MiB a purgatory may take"),
    (8, 3, r"section \.bss\S* has alignment 0x3, not a power of two"),
    (8, 1 << 63, r"alignment 0x8000000000000000, not a power of two up to 0x100000"),
])
def test_huge_bss_or_bad_alignment(purgatory: tuple[str, bytearray], field: int, value: int,
                                   message: str) -> None:
    arch, data = purgatory
    elf = RelocatableElf(bytes(data), "purgatory")
    bss = max((s for s in elf.sections if s.type == SHT_NOBITS), key=lambda s: s.size)
    at = _shdr_offset(data, bss.index)
    fields = list(ELF64_SHDR.unpack_from(data, at))
    fields[field] = value
    ELF64_SHDR.pack_into(data, at, *fields)
    with pytest.raises(BadInputError, match=message):
        _link(arch, bytes(data))


def test_symbol_past_the_end_of_its_section(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    elf = RelocatableElf(bytes(data), "purgatory")
    symtab = elf.symtab()
    names = [s.name for s in elf.symbols(symtab)]
    at = symtab.offset + names.index("purgatory_start") * ELF64_SYM.size
    fields = list(ELF64_SYM.unpack_from(data, at))
    fields[4] = 1 << 60       # st_value
    ELF64_SYM.pack_into(data, at, *fields)
    with pytest.raises(BadInputError, match=r"symbol purgatory_start \(0x1000000000000000, \d+ bytes\) lies past "
                                            r"the end of its section \.text"):
        _link(arch, bytes(data))


def test_every_byte_of_the_relocations_and_symbols_mutated(purgatory: tuple[str, bytearray]) -> None:
    """Each byte of the relocation and symbol tables set to 0xFF in turn: linked or refused, nothing else."""
    arch, data = purgatory
    elf = RelocatableElf(bytes(data), "purgatory")
    tables = [s for s in elf.sections if s.type == SHT_RELA] + [elf.symtab()]
    outcomes = {"linked": 0, "refused": 0}
    for table in tables:
        for at in range(table.offset, table.offset + table.size):
            mutated = bytearray(data)
            mutated[at] = 0xFF
            try:
                _link(arch, bytes(mutated))
                outcomes["linked"] += 1
            except KexecfwError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and sum(outcomes.values()) == sum(t.size for t in tables)
