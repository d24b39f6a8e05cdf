"""The core's elfcorehdr against what kexec-tools built on the same real guests."""
from __future__ import annotations

import io
import re

import pytest
from elftools.elf.elffile import ELFFile

from kexecfw.elfcore import build_elfcorehdr, elfcore_program_headers
from kexecfw.elfnotes import PT_LOAD, PT_NOTE, parse_elf_header
from kexecfw.memory.iomem import read_iomem
from kexecfw.model import ElfcoreInfo, KernelTextLoad
from kexecfw.sysroot import Sysroot
from tests.conftest import fixture_path

PHDR_LINE = re.compile(r"p_type = (\d+), p_offset = (0x[0-9a-f]+) p_paddr = (0x[0-9a-f]+) p_vaddr = (0x[0-9a-f]+) "
                       r"p_filesz = (0x[0-9a-f]+)")


def kexec_tools_phdrs(arch: str) -> list[tuple[int, int, int, int, int]]:
    text = fixture_path(arch, "kexec-tools", "kexec-p-debug.txt").read_text()
    return [tuple(int(x, 0) for x in m.groups()) for m in PHDR_LINE.finditer(text)]


@pytest.mark.parametrize("arch, machine", [("arm64", 183), ("x86_64", 62)])
def test_notes_match_kexec_tools(arch, machine):
    sysroot = Sysroot(fixture_path(arch, "sysroot"))
    memmap = read_iomem(sysroot)
    info = ElfcoreInfo(machine=machine, kernel_text=KernelTextLoad(0xFFFFFFFF81000000, memmap.kernel_code.start,
                                                                   0x1000000), page_offset=0xFFFF000000000000)
    phdrs = elfcore_program_headers(info, sysroot, memmap.crash_dump_ranges)
    ours_notes = [(p.type, p.offset, p.paddr, p.vaddr, p.filesz) for p in phdrs if p.type == PT_NOTE]
    theirs_notes = [p for p in kexec_tools_phdrs(arch) if p[0] == PT_NOTE]
    assert ours_notes == theirs_notes  # per-CPU crash notes then VMCOREINFO, same addresses and sizes

    hdr = build_elfcorehdr(machine, phdrs)
    parsed = parse_elf_header(hdr, "elfcorehdr")
    assert parsed.machine == machine and parsed.phdrs == tuple(phdrs)
    elf = ELFFile(io.BytesIO(hdr))  # an independent reader agrees
    assert elf["e_type"] == "ET_CORE" and elf.num_segments() == len(phdrs)


def test_arm64_ram_loads_cover_ram_outside_crash_region_like_kexec_tools():
    sysroot = Sysroot(fixture_path("arm64", "sysroot"))
    memmap = read_iomem(sysroot)
    info = ElfcoreInfo(machine=183, kernel_text=None, page_offset=0xFFFF000000000000, phys_offset=0x40000000)
    loads = [(p.offset, p.vaddr, p.filesz) for p in elfcore_program_headers(info, sysroot, memmap.crash_dump_ranges)
             if p.type == PT_LOAD]
    theirs = [(p[1], p[3], p[4]) for p in kexec_tools_phdrs("arm64") if p[0] == PT_LOAD][1:]  # [0] is kernel text
    assert loads == theirs
