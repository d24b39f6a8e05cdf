"""Bounds for numbers read from a dump: the one place they are checked before anything uses them.

A dump's headers and its VMCOREINFO note are data written by a crashing kernel (or by anyone): a
page size, a physical address, a struct size or offset, a ring-buffer size is checked here against
the architecture and against the file before a reader allocates, loops, shifts or seeks with it.
A value out of bounds raises BadInputError naming the value, where it came from and what the bound is.

The architecture facts are keyed by ELF e_machine (the capture side runs without the plugin manager:
`vmcore dmesg` must start fast in a capture kernel); an unknown machine gets the loosest bounds any
Linux architecture needs.
"""
from __future__ import annotations

from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord

EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243


class ArchBounds(TupleRecord):
    """What a dump of one architecture can hold."""
    __slots__ = ()
    name: str
    page_sizes: tuple            # the base page sizes its kernels are built with
    phys_bits: int               # the widest physical address its kernels use (MAX_PHYSMEM_BITS)


# arch/x86/include/asm/sparsemem.h: MAX_PHYSMEM_BITS 52 with 5-level paging (46 with 4);
# arch/arm64/include/asm/sparsemem.h: 52 (LPA/LPA2); arch/riscv/include/asm/sparsemem.h: 56 (Sv57).
ARCH_BOUNDS: dict[int, ArchBounds] = {
    EM_X86_64: ArchBounds("x86_64", (4096,), 52),
    EM_AARCH64: ArchBounds("arm64", (4096, 16384, 65536), 52),
    EM_RISCV: ArchBounds("riscv64", (4096,), 56),
}
ANY_ARCH = ArchBounds("unknown architecture", (4096, 8192, 16384, 32768, 65536), 57)


def arch_bounds(machine: int) -> ArchBounds:
    """The bounds of ELF machine ``machine`` (the loosest ones for a machine not in the table)."""
    return ARCH_BOUNDS.get(machine, ANY_ARCH)


def check_page_size(value: int | None, machine: int, source: str) -> int:
    """``value`` as a page size of ``machine``; ``source`` names where it was read (a file and field)."""
    allowed = arch_bounds(machine).page_sizes
    if value not in allowed:
        sizes = ", ".join(str(s) for s in allowed)
        raise BadInputError(f"{source}: page size {value} is not one of {arch_bounds(machine).name}'s "
                            f"({sizes}): the dump is corrupt")
    return value


def check_phys_end(end: int, machine: int, source: str) -> int:
    """``end`` (one past a physical address) within ``machine``'s physical address bits."""
    bounds = arch_bounds(machine)
    if not 0 <= end <= 1 << bounds.phys_bits:
        raise BadInputError(f"{source}: physical address {end:#x} is beyond {bounds.name}'s "
                            f"{bounds.phys_bits}-bit physical address space: the dump is corrupt")
    return end
