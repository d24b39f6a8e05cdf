"""x86_64 relocation formulas for the purgatory (System V AMD64 psABI, "Relocation Types").

Only what a freestanding ``-mcmodel=large`` object and its entry assembly emit.
``value`` is S + A; PLT32 resolves like PC32 because nothing is shared. ``buf`` is the
target section: a field past its end, or a result that does not fit, is a BadInputError
naming the relocation (the linker adds the symbol and section).
"""
from __future__ import annotations

import struct

from kexecfw.errors import BadInputError
from kexecfw.model import RelocationApplier
from kexecfw.purgatory import check_field, signed64

R_X86_64_64 = 1
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
R_X86_64_32 = 10
R_X86_64_32S = 11

_S32_MIN, _S32_MAX = -(1 << 31), (1 << 31) - 1


def _overflow(name: str, place: int, result: int) -> BadInputError:
    return BadInputError(f"purgatory relocation {name} at {place:#x} overflows ({result:#x} does not fit 32 bits); "
                        "place the purgatory nearer its targets or rebuild it with -mcmodel=large")


def _abs64(buf: bytearray, offset: int, place: int, value: int) -> None:
    check_field(buf, offset, 8, "R_X86_64_64", place)
    struct.pack_into("<Q", buf, offset, value & ((1 << 64) - 1))


def _pc32(name: str) -> RelocationApplier:
    def apply(buf: bytearray, offset: int, place: int, value: int) -> None:
        check_field(buf, offset, 4, name, place)
        result = signed64(value - place)
        if not _S32_MIN <= result <= _S32_MAX:
            raise _overflow(name, place, result)
        struct.pack_into("<i", buf, offset, result)
    return apply


def _abs32(buf: bytearray, offset: int, place: int, value: int) -> None:
    check_field(buf, offset, 4, "R_X86_64_32", place)
    if value >> 32:
        raise _overflow("R_X86_64_32", place, value)
    struct.pack_into("<I", buf, offset, value)


def _abs32s(buf: bytearray, offset: int, place: int, value: int) -> None:
    check_field(buf, offset, 4, "R_X86_64_32S", place)
    result = signed64(value)
    if not _S32_MIN <= result <= _S32_MAX:
        raise _overflow("R_X86_64_32S", place, value)
    struct.pack_into("<i", buf, offset, result)


X86_64_RELOCATIONS: dict[int, tuple[str, RelocationApplier]] = {
    R_X86_64_64: ("R_X86_64_64", _abs64),
    R_X86_64_PC32: ("R_X86_64_PC32", _pc32("R_X86_64_PC32")),
    R_X86_64_PLT32: ("R_X86_64_PLT32", _pc32("R_X86_64_PLT32")),
    R_X86_64_32: ("R_X86_64_32", _abs32),
    R_X86_64_32S: ("R_X86_64_32S", _abs32s),
}
