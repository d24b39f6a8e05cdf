"""Bounds for numbers read from a dump: the one place they are checked before anything uses them.

A dump's headers and its VMCOREINFO note are data written by a crashing kernel (or by anyone): a
page size, a physical address, a struct size or offset, a ring-buffer size is checked here against
the architecture and against the file before a reader allocates, loops, shifts or seeks with it.
A value out of bounds raises BadInputError naming the value, where it came from and what the bound is.

The architecture facts are keyed by ELF e_machine: each plugin's capture module gives its own
(kexecfw.machines; the capture side runs without the plugin manager: `vmcore dmesg` must start fast
in a capture kernel); an unknown machine gets the loosest bounds any Linux architecture needs.
"""
from __future__ import annotations

from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord

# ELF machine numbers the readers and their tests name dumps by (facts about them are the plugins')
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243


class ArchBounds(TupleRecord):
    """What a dump of one architecture can hold."""
    __slots__ = ()
    name: str
    page_sizes: tuple            # the base page sizes its kernels are built with
    phys_bits: int               # the widest physical address its kernels use (MAX_PHYSMEM_BITS)


ANY_ARCH = ArchBounds("unknown architecture", (4096, 8192, 16384, 32768, 65536), 57)


def arch_bounds(machine: int) -> ArchBounds:
    """The bounds of ELF machine ``machine``, from its plugin's capture module (kexecfw.machines); the
    loosest ones for a machine no installed plugin describes."""
    from kexecfw.machines import machine_capture
    capture = machine_capture(machine)
    return capture.bounds if capture is not None else ANY_ARCH


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


# --- VMCOREINFO values -----------------------------------------------------------------------------
# Sane limits for the kernel structures VMCOREINFO describes. The kernel's are far smaller (struct page
# 64 bytes, printk_info 88, printk_ringbuffer 88, mem_section 16 or 32); readers pass a tighter limit
# where they know one. Checked before a struct is read whole or used as an array entry.
MAX_STRUCT_SIZE = 1 << 16
# kernel/printk/printk.c LOG_BUF_LEN_MAX: the largest log buffer (the text data ring since 5.10) the
# kernel accepts; kernel/printk/printk_ringbuffer.h: one descriptor per 2^PRB_AVGBITS bytes of text.
LOG_BUF_LEN_MAX = 1 << 31
PRB_AVGBITS = 5
U64_MAX = (1 << 64) - 1
S64_MIN = -(1 << 63)


class CheckedInfo:
    """VMCOREINFO values within bounds, for the readers of kernel memory.

    ``size``, ``offset``, ``shift``, ``number`` and ``symbol`` return the key's value once it is
    checked against the bound given, or None when VMCOREINFO lacks the key; their ``need_*``
    forms raise BadInputError instead, saying what cannot be done without it (``why``). A value
    out of bounds, or one that is not a number, raises BadInputError naming the key and the bound.
    ``source`` names where the VMCOREINFO came from and ``verdict`` what a bad value means there
    (a dump's, by default; the arm64 plugin reads the running kernel's from proc/kcore).
    """

    def __init__(self, info, machine: int, page_size: int | None = None, source: str = "VMCOREINFO",
                 verdict: str = "the dump is corrupt") -> None:
        self.info = info
        self.arch = arch_bounds(machine)
        self.source, self.verdict = source, verdict
        declared = self._int("PAGESIZE")
        if declared is not None:
            check_page_size(declared, machine, f"{source} PAGESIZE")
            if page_size is not None and declared != page_size:
                raise BadInputError(f"{source} PAGESIZE={declared} is not the dump's page size ({page_size}): "
                                    f"{verdict}")
        self.page_size: int = check_page_size(page_size or declared or self.arch.page_sizes[0], machine,
                                              "the dump's page size")
        self.page_shift = self.page_size.bit_length() - 1

    def _int(self, key: str) -> int | None:
        value = self.info.get_int(key)
        if value is None and key in self.info:
            raise BadInputError(f"{self.source} {key}={self.info.raw[key]!r} is not a number: {self.verdict}")
        return value

    def _get(self, key: str, why: str | None) -> int | None:
        value = self._int(key)
        if value is None and why is not None:
            raise BadInputError(f"{self.source} lacks {key}" + (f": {why}" if why else ""))
        return value

    def within(self, key: str, lo: int, hi: int, why: str | None = None) -> int | None:
        """The integer value of ``key`` (a whole key: ``NUMBER(VA_BITS)``, ``KERNELOFFSET``) in [lo, hi]."""
        value = self._get(key, why)
        if value is not None and not lo <= value <= hi:
            bound = f"max {hi}" if lo in (0, 1) else f"expected {lo}..{hi}"
            raise BadInputError(f"{self.source} {key}={value} is not plausible ({bound}): {self.verdict}")
        return value

    def size(self, name: str, limit: int = MAX_STRUCT_SIZE, why: str | None = None) -> int | None:
        """SIZE(name), 1 to ``limit`` bytes."""
        return self.within(f"SIZE({name})", 1, limit, why)

    def need_size(self, name: str, limit: int = MAX_STRUCT_SIZE, why: str = "") -> int:
        return self.size(name, limit, why)

    def offset(self, name: str, within: int, width: int = 1, why: str | None = None) -> int | None:
        """OFFSET(name) of a ``width``-byte field inside a struct of ``within`` bytes."""
        key = f"OFFSET({name})"
        value = self._get(key, why)
        if value is not None and not 0 <= value <= within - width:
            raise BadInputError(f"{self.source} {key}={value} lies outside struct {name.partition('.')[0]} "
                                f"({within} bytes): {self.verdict}")
        return value

    def need_offset(self, name: str, within: int, width: int = 1, why: str = "") -> int:
        return self.offset(name, within, width, why)

    def shift(self, name: str, lo: int, hi: int, why: str | None = None) -> int | None:
        """NUMBER(name) used as a shift count or a bit number: lo to hi."""
        return self.within(f"NUMBER({name})", lo, hi, why)

    def need_shift(self, name: str, lo: int, hi: int, why: str = "") -> int:
        return self.shift(name, lo, hi, why)

    def number(self, name: str, lo: int = S64_MIN, hi: int = U64_MAX, why: str | None = None) -> int | None:
        """NUMBER(name) in [lo, hi] (by default any 64-bit value, signed or not)."""
        return self.within(f"NUMBER({name})", lo, hi, why)

    def need_number(self, name: str, lo: int = S64_MIN, hi: int = U64_MAX, why: str = "") -> int:
        return self.number(name, lo, hi, why)

    def u64(self, name: str) -> int | None:
        """A 64-bit NUMBER(name) the kernel prints signed or not (PHYS_OFFSET, kimage_voffset), unsigned."""
        value = self.number(name)
        return None if value is None else value & U64_MAX

    def symbol(self, name: str, why: str | None = None) -> int | None:
        """SYMBOL(name): a kernel virtual address (not 0, 64 bits)."""
        return self.within(f"SYMBOL({name})", 1, U64_MAX, why)

    def need_symbol(self, name: str, why: str = "") -> int:
        return self.symbol(name, why)

    def phys(self, name: str, why: str | None = None) -> int | None:
        """NUMBER(name) as a physical address of this architecture."""
        return self.within(f"NUMBER({name})", 0, (1 << self.arch.phys_bits) - 1, why)

    def phys_delta(self, name: str, why: str | None = None) -> int | None:
        """NUMBER(name) as a signed distance between two physical addresses of this architecture
        (x86_64's phys_base, printed with %ld, is negative when KASLR put the kernel below the
        physical address it was linked for)."""
        span = 1 << self.arch.phys_bits
        return self.within(f"NUMBER({name})", -span + 1, span - 1, why)


def check_count(value: int, limit: int, what: str) -> int:
    """``value`` (a count or a size read from kernel memory: ``what`` names the kernel structure) in 0..limit."""
    if not 0 <= value <= limit:
        raise BadInputError(f"{what} is {value}, not plausible (max {limit}): the dump is corrupt")
    return value


def check_extent(nbytes: int, available: int, what: str) -> int:
    """``nbytes`` of kernel memory to read for ``what``: no more than the ``available`` bytes of memory the
    dump describes (a size from VMCOREINFO or kernel memory that exceeds it is corrupt)."""
    if not 0 <= nbytes <= available:
        raise BadInputError(f"{what} is {nbytes} bytes, more than the {available} bytes of memory the dump "
                            "describes: the dump is corrupt")
    return nbytes
