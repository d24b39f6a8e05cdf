"""Data passed between the core and the architecture plugins.

These are the types named in :mod:`kexecfw.hookspecs`: what a plugin receives
(:class:`LoadContext`) and what it returns (:class:`ArchSpec`,
:class:`KernelImage`, :class:`ElfcoreInfo`, :class:`PurgatoryObject`).
"""
from __future__ import annotations

import os
from typing import Any, Callable

from kexecfw.memory.model import MemoryMap
from kexecfw.memory.ranges import Range
from kexecfw.records import Record, fresh
from kexecfw.sysroot import Sysroot

# kexec_load flags, include/uapi/linux/kexec.h
KEXEC_ON_CRASH = 0x00000001
KEXEC_PRESERVE_CONTEXT = 0x00000002
KEXEC_UPDATE_ELFCOREHDR = 0x00000004
KEXEC_ARCH_MASK = 0xFFFF0000
KEXEC_SEGMENT_MAX = 16
# kexec_file_load flags, include/uapi/linux/kexec.h
KEXEC_FILE_UNLOAD = 0x00000001
KEXEC_FILE_ON_CRASH = 0x00000002
KEXEC_FILE_NO_INITRAMFS = 0x00000004


class ArchSpec(Record, frozen=True):
    """What an architecture is, as far as the core needs to know.

    ``kexec_arch`` is the KEXEC_ARCH_* value for kexec_load's flags (the ELF
    machine shifted left by 16, include/uapi/linux/kexec.h). Syscall numbers
    are the ones of this architecture's syscall table.
    """

    name: str                       # canonical: "arm64", "x86_64"
    aliases: tuple[str, ...]        # "aarch64", "amd64" ...
    elf_machine: int                # EM_AARCH64 = 183, EM_X86_64 = 62
    elf_class: int = 64             # 32 or 64
    little_endian: bool = True
    page_size: int = 4096
    nr_kexec_load: int = -1
    nr_kexec_file_load: int = -1    # -1: the architecture has no kexec_file_load
    nr_reboot: int = -1
    uname_machines: tuple[str, ...] = ()
    file_load_default: bool = False  # prefer kexec_file_load where the running kernel has it

    @property
    def kexec_arch(self) -> int:
        return self.elf_machine << 16

    def matches(self, name: str) -> bool:
        n = name.lower()
        return n == self.name or n in self.aliases or n in self.uname_machines


class KernelFile(Record, frozen=True):
    """A kernel image file as given on the command line.

    ``data`` is its content as bytes. A load maps the file instead of reading it
    (kexecfw.load.read_input): ``view`` is that content without a copy, which the built-in
    plugins parse and slice; ``data`` makes bytes of it on first use, for plugins that want
    bytes' methods."""

    path: str | os.PathLike[str]
    data: bytes

    @property
    def view(self) -> memoryview:
        return memoryview(self.__dict__["data"])


def _kernel_file_bytes(self: KernelFile) -> bytes:
    value = self.__dict__["data"]
    if type(value) is not bytes:
        value = self.__dict__["data"] = bytes(value)   # once (the record is frozen: __dict__ directly)
    return value


# after the class body: there, a property named like the field would be taken for its default
KernelFile.data = property(_kernel_file_bytes)  # type: ignore[assignment]


class KernelImage(Record):
    """A kernel image a plugin recognised (``kexecfw_probe_kernel``).

    ``payload`` is what gets loaded (e.g. the decompressed arm64 Image);
    ``details`` holds the parsed header fields, shown by ``load --dry-run`` and
    the notebooks.
    """

    arch: str
    format: str                     # "arm64 Image", "bzImage", "vmlinux ELF" ...
    payload: bytes
    details: dict[str, Any] = fresh(dict)


class LoadOptions(Record):
    """What the user asked for (``kexecfw load``)."""

    kernel: str | os.PathLike[str]      # str from the command line: a load does not import pathlib
    initrd: str | os.PathLike[str] | None = None
    cmdline: str = ""
    panic: bool = False
    dtb: str | os.PathLike[str] | None = None
    file_load: bool | None = None   # None: the architecture's default for the running kernel
    skip_sha256: bool = False


class LoadContext(Record):
    """Passed to every load hook. Grows as planning goes: ``memmap`` after discovery,
    ``kernel`` after probing. ``log`` records each decision in words (dry-run
    shows it); ``artifacts`` holds intermediate results for notebooks and tests
    (a DTB before/after, the purgatory's relocations ...)."""

    arch: ArchSpec
    sysroot: Sysroot
    options: LoadOptions
    memmap: MemoryMap | None = None
    kernel: KernelImage | None = None
    cmdline: str = ""
    log: list[str] = fresh(list)
    artifacts: dict[str, Any] = fresh(dict)
    hooks: Any = None               # the kexecfw.pluginmanager.Hooks running this load

    @property
    def panic(self) -> bool:
        return self.options.panic

    def note(self, message: str) -> None:
        self.log.append(message)


class KernelTextLoad(Record, frozen=True):
    """The PT_LOAD of the kernel image in the elfcorehdr: virtual and physical start, size."""

    vaddr: int
    paddr: int
    size: int


class ElfcoreInfo(Record):
    """Architecture facts the core's elfcorehdr builder needs (``kexecfw_elfcore_info``).

    ``page_offset`` maps a physical address to its direct-map virtual address
    (vaddr = paddr - phys_offset + page_offset) for the System RAM PT_LOADs;
    ``ram_ranges`` are the physical ranges to dump (default: System RAM minus the crash regions).
    """

    machine: int
    kernel_text: KernelTextLoad | None
    page_offset: int
    phys_offset: int = 0
    ram_ranges: list[Range] | None = None


#: ``apply(buf, offset, place, value)`` patches one relocation in the purgatory's image.
#: ``offset`` indexes ``buf``; ``place`` is the physical address of that byte after
#: loading; ``value`` is S + A (symbol address plus addend).
RelocationApplier = Callable[[bytearray, int, int, int], None]


class PurgatoryObject(Record):
    """A relocatable purgatory object (ET_REL) and where it may be placed.

    ``entry_symbol`` is where the kernel jumps after kexec; ``symbols`` are the
    values the core writes into the linked image before the sha256 regions are
    filled: names of purgatory globals mapped to bytes (the exact value).
    """

    elf: bytes
    entry_symbol: str = "purgatory_start"
    align: int = 4096
    min_addr: int = 0
    max_addr: int = 1 << 64
    top_down: bool = False
    symbols: dict[str, bytes] = fresh(dict)
