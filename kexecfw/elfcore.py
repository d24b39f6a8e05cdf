"""Build the elfcorehdr: the ELF core header the capture kernel turns into /proc/vmcore.

Layout as the kernel's crash_prepare_elf64_headers() (kernel/crash_core.c)
and kexec-tools write it: an Elf64_Ehdr (ET_CORE), then program headers —
one PT_NOTE per CPU pointing at its crash_notes buffer, one PT_NOTE for
VMCOREINFO, a PT_LOAD for the kernel text (virtual address of ``_text``), and
one PT_LOAD per range of System RAM to dump. All offsets are physical
addresses (p_offset = p_paddr): the capture kernel rewrites them.
"""
from __future__ import annotations

import struct

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, ET_CORE, PT_LOAD, PT_NOTE, ProgramHeader
from kexecfw.errors import BadInputError
from kexecfw.model import ElfcoreInfo
from kexecfw.sysroot import Sysroot

EV_CURRENT = 1
PF_X, PF_W, PF_R = 1, 2, 4
# kexec-tools' fallback when crash_notes_size is absent (kernels before 4.1)
DEFAULT_NOTE_BYTES = 1024


def elfcore_program_headers(info: ElfcoreInfo, sysroot: Sysroot, ram_ranges: list) -> list[ProgramHeader]:
    """The program headers, in the kernel's order: CPU notes, VMCOREINFO, kernel text, RAM."""
    phdrs: list[ProgramHeader] = []
    notes = sysroot.crash_notes()
    if not notes:
        raise BadInputError(f"{sysroot.file('sys/devices/system/cpu')} has no cpuN/crash_notes: "
                            "the kernel lacks CONFIG_CRASH_DUMP or the snapshot is incomplete")
    for note in notes:
        size = note.size or DEFAULT_NOTE_BYTES
        phdrs.append(ProgramHeader(PT_NOTE, 0, note.address, 0, note.address, size, size, 0))
    vmcoreinfo_addr, vmcoreinfo_size = sysroot.vmcoreinfo_location()
    phdrs.append(ProgramHeader(PT_NOTE, 0, vmcoreinfo_addr, 0, vmcoreinfo_addr, vmcoreinfo_size,
                               vmcoreinfo_size, 0))
    rwx = PF_R | PF_W | PF_X
    if info.kernel_text is not None:
        kt = info.kernel_text
        phdrs.append(ProgramHeader(PT_LOAD, rwx, kt.paddr, kt.vaddr, kt.paddr, kt.size, kt.size, 0))
    for r in ram_ranges:
        vaddr = (r.start - info.phys_offset + info.page_offset) & ((1 << 64) - 1)
        phdrs.append(ProgramHeader(PT_LOAD, rwx, r.start, vaddr, r.start, r.size, r.size, 0))
    return phdrs


def build_elfcorehdr(machine: int, phdrs: list[ProgramHeader]) -> bytes:
    """Serialise an Elf64_Ehdr followed by ``phdrs``."""
    ident = b"\x7fELF" + bytes([2, 1, EV_CURRENT, 0]) + bytes(8)   # ELFCLASS64, ELFDATA2LSB, SYSV ABI
    header = ELF64_EHDR.pack(ident, ET_CORE, machine, EV_CURRENT, 0, ELF64_EHDR.size, 0, 0,
                             ELF64_EHDR.size, ELF64_PHDR.size, len(phdrs), 0, 0, 0)
    return header + b"".join(ELF64_PHDR.pack(p.type, p.flags, p.offset, p.vaddr, p.paddr, p.filesz,
                                             p.memsz, p.align) for p in phdrs)


assert struct.calcsize("<16sHHIQQQIHHHHHH") == 64
