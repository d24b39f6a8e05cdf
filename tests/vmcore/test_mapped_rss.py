"""A save reads small pieces of a regular-file vmcore all over it (page tables, short runs of pages);
the pages mapped for those reads must not pile up in the process's RSS (8 GiB guest: 193 MiB peak)."""
from __future__ import annotations

import os
from pathlib import Path

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, ET_CORE, PT_LOAD
from kexecfw.vmcore import elfdump
from kexecfw.vmcore.elfdump import ElfDump

PAGE = 4096
EM_X86_64 = 62


def _core(path: Path, size: int) -> None:
    """An ELF core with one PT_LOAD of ``size`` bytes at physical 0 (no notes)."""
    data_at = PAGE
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = ELF64_EHDR.pack(ident, ET_CORE, EM_X86_64, 1, 0, ELF64_EHDR.size, 0, 0, ELF64_EHDR.size,
                           ELF64_PHDR.size, 1, 0, 0, 0)
    phdr = ELF64_PHDR.pack(PT_LOAD, 7, data_at, 0, 0, size, size, 0)
    with open(path, "wb") as f:
        f.write((ehdr + phdr).ljust(data_at, b"\0"))
        f.write(os.urandom(size))


def _mapped_rss_kib(path: Path) -> int:
    """Rss of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, ours = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                ours = line.rstrip().endswith(str(path))
            elif ours and first == "Rss:":
                total += int(line.split()[1])
    return total


def test_small_reads_do_not_stay_mapped(tmp_path: Path, monkeypatch) -> None:
    core = tmp_path / "core.elf"
    size = 32 << 20
    _core(core, size)
    monkeypatch.setattr(elfdump, "UNMAP_AFTER", 1 << 20)
    with ElfDump(str(core)) as dump:
        assert dump._map is not None
        for paddr in range(0, size, 16 * PAGE):       # a page-table entry per 64 KiB, as a walk reads
            assert len(dump.read_phys(paddr, 8)) == 8
        rss = _mapped_rss_kib(core)
    # unmapped every 1 MiB of mapped reads (each counted with its 64 KiB fault-around)
    assert rss <= 2048, f"{rss} KiB of the vmcore stayed mapped"


def test_reads_are_unchanged_by_unmapping(tmp_path: Path, monkeypatch) -> None:
    core = tmp_path / "core.elf"
    _core(core, 4 << 20)
    raw = core.read_bytes()[PAGE:]
    monkeypatch.setattr(elfdump, "UNMAP_AFTER", 64 << 10)
    with ElfDump(str(core)) as dump:
        for paddr in range(0, 4 << 20, 12345):
            assert dump.read_phys(paddr, 100) == raw[paddr:paddr + 100]
