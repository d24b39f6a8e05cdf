"""AArch64 relocation formulas for linking the purgatory (ELF for the Arm 64-bit Architecture,
AAELF64, section 5.7 "Relocation"; type numbers as in include/uapi/linux/elf.h's R_AARCH64_*).

Each applier gets ``value`` = S + A (mod 2^64) and ``place`` = P and patches the
little-endian field in ``buf`` (the target section). Checked relocations raise
BadInputError when the result does not fit the instruction, naming the relocation
(the linker adds the symbol and section); "_NC" ones do not check overflow. A field
past the end of ``buf`` is refused before it is touched.
"""
from __future__ import annotations

import struct
from typing import Callable

from kexecfw.errors import BadInputError
from kexecfw.model import RelocationApplier
from kexecfw.purgatory import check_field, signed64

_U32 = struct.Struct("<I")


def _check(name: str, x: int, lo: int, hi: int, place: int) -> None:
    if not lo <= x < hi:
        raise BadInputError(f"purgatory relocation {name} at {place:#x}: value {x:#x} out of range "
                           f"[{lo:#x}, {hi:#x}); the purgatory is too far from its target")


def _aligned(name: str, x: int, align: int, place: int) -> None:
    if x % align:
        raise BadInputError(f"purgatory relocation {name} at {place:#x}: {x:#x} is not {align}-byte aligned")


def _patch_insn(name: str, buf: bytearray, offset: int, place: int, clear: int, bits: int) -> None:
    check_field(buf, offset, 4, name, place)
    (insn,) = _U32.unpack_from(buf, offset)
    _U32.pack_into(buf, offset, (insn & ~clear & 0xFFFFFFFF) | bits)


def _data(name: str, size: int, relative: bool, check: bool) -> RelocationApplier:
    def apply(buf: bytearray, offset: int, place: int, value: int) -> None:
        check_field(buf, offset, size, name, place)
        x = signed64(value - place) if relative else value
        if check and size < 8:
            # AAELF64: the result must fit as a signed or an unsigned field of this size
            _check(name, signed64(x), -(1 << (8 * size - 1)), 1 << (8 * size), place)
        buf[offset:offset + size] = (x & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    return apply


def _branch(name: str, bits: int, shift: int) -> RelocationApplier:
    """B/BL (imm26 at bit 0), B.cond/CBZ/LDR literal (imm19 at bit 5), TBZ (imm14 at bit 5)."""
    field = ((1 << bits) - 1) << shift

    def apply(buf: bytearray, offset: int, place: int, value: int) -> None:
        x = signed64(value - place)
        _aligned(name, x, 4, place)
        _check(name, x, -(1 << (bits + 1)), 1 << (bits + 1), place)
        _patch_insn(name, buf, offset, place, field, ((x >> 2) << shift) & field)
    return apply


def _adr_bits(imm21: int) -> int:
    """ADR/ADRP immediate: immlo = bits [1:0] at insn[30:29], immhi = bits [20:2] at insn[23:5]."""
    return ((imm21 & 0x3) << 29) | (((imm21 >> 2) & 0x7FFFF) << 5)


_ADR_FIELD = (0x3 << 29) | (0x7FFFF << 5)


def _adr_prel_lo21(name: str) -> RelocationApplier:
    def apply(buf: bytearray, offset: int, place: int, value: int) -> None:
        x = signed64(value - place)
        _check(name, x, -(1 << 20), 1 << 20, place)
        _patch_insn(name, buf, offset, place, _ADR_FIELD, _adr_bits(x))
    return apply


def _adr_page(name: str, check: bool) -> RelocationApplier:
    def apply(buf: bytearray, offset: int, place: int, value: int) -> None:
        x = signed64((value & ~0xFFF) - (place & ~0xFFF))
        if check:
            _check(name, x, -(1 << 32), 1 << 32, place)
        _patch_insn(name, buf, offset, place, _ADR_FIELD, _adr_bits(x >> 12))
    return apply


def _lo12(name: str, scale: int) -> RelocationApplier:
    """ADD/LDR/STR unsigned imm12 at insn[21:10]: bits [11:scale] of S + A."""
    field = 0xFFF << 10

    def apply(buf: bytearray, offset: int, place: int, value: int) -> None:
        lo = value & 0xFFF
        _aligned(name, lo, 1 << scale, place)
        _patch_insn(name, buf, offset, place, field, (lo >> scale) << 10)
    return apply


_TYPES: dict[int, tuple[str, Callable[[str], RelocationApplier]]] = {
    257: ("R_AARCH64_ABS64", lambda n: _data(n, 8, False, False)),
    258: ("R_AARCH64_ABS32", lambda n: _data(n, 4, False, True)),
    259: ("R_AARCH64_ABS16", lambda n: _data(n, 2, False, True)),
    260: ("R_AARCH64_PREL64", lambda n: _data(n, 8, True, False)),
    261: ("R_AARCH64_PREL32", lambda n: _data(n, 4, True, True)),
    262: ("R_AARCH64_PREL16", lambda n: _data(n, 2, True, True)),
    273: ("R_AARCH64_LD_PREL_LO19", lambda n: _branch(n, 19, 5)),
    274: ("R_AARCH64_ADR_PREL_LO21", _adr_prel_lo21),
    275: ("R_AARCH64_ADR_PREL_PG_HI21", lambda n: _adr_page(n, True)),
    276: ("R_AARCH64_ADR_PREL_PG_HI21_NC", lambda n: _adr_page(n, False)),
    277: ("R_AARCH64_ADD_ABS_LO12_NC", lambda n: _lo12(n, 0)),
    278: ("R_AARCH64_LDST8_ABS_LO12_NC", lambda n: _lo12(n, 0)),
    279: ("R_AARCH64_TSTBR14", lambda n: _branch(n, 14, 5)),
    280: ("R_AARCH64_CONDBR19", lambda n: _branch(n, 19, 5)),
    282: ("R_AARCH64_JUMP26", lambda n: _branch(n, 26, 0)),
    283: ("R_AARCH64_CALL26", lambda n: _branch(n, 26, 0)),
    284: ("R_AARCH64_LDST16_ABS_LO12_NC", lambda n: _lo12(n, 1)),
    285: ("R_AARCH64_LDST32_ABS_LO12_NC", lambda n: _lo12(n, 2)),
    286: ("R_AARCH64_LDST64_ABS_LO12_NC", lambda n: _lo12(n, 3)),
    299: ("R_AARCH64_LDST128_ABS_LO12_NC", lambda n: _lo12(n, 4)),
}

RELOCATION_TYPES: dict[int, tuple[str, RelocationApplier]] = {
    number: (name, make(name)) for number, (name, make) in _TYPES.items()
}
