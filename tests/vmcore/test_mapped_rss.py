"""A save reads small pieces of a vmcore all over it (page tables, struct pages, short runs of pages).
What it maps for those reads stays a few windows: mapped pages of a regular file must not pile up in the
process's RSS (8 GiB guest: 193 MiB peak once), and /proc/vmcore builds the page tables of a whole
mapping at mmap() time (16 MiB of page tables for an 8 GiB guest if the whole file were mapped)."""
from __future__ import annotations

import mmap
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


def _mapped(path: Path) -> tuple[int, int]:
    """(Rss in KiB, address space in bytes) of this process's mappings of ``path`` (/proc/self/smaps)."""
    rss, size, ours = 0, 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                ours = line.rstrip().endswith(str(path))
                if ours:
                    lo, hi = (int(x, 16) for x in first.split("-"))
                    size += hi - lo
            elif ours and first == "Rss:":
                rss += int(line.split()[1])
    return rss, size


def test_small_reads_map_a_few_windows_only(tmp_path: Path) -> None:
    core = tmp_path / "core.elf"
    size = 32 << 20
    _core(core, size)
    with ElfDump(str(core)) as dump:
        most_mapped = 0
        for paddr in range(0, size, 16 * PAGE):       # a page-table entry per 64 KiB, as a walk reads
            assert len(dump.read_phys(paddr, 8)) == 8
            if paddr % (1 << 20) == 0:
                most_mapped = max(most_mapped, _mapped(core)[1])
        rss, mapped = _mapped(core)
    bound = elfdump.MAP_WINDOWS * elfdump.MAP_WINDOW
    assert 0 < most_mapped <= bound and mapped <= bound, f"{max(most_mapped, mapped)} bytes of the vmcore mapped"
    assert rss <= bound // 1024, f"{rss} KiB of the vmcore stayed mapped"
    assert _mapped(core) == (0, 0)                    # closed: nothing left mapped


def test_reads_are_the_files_bytes_across_windows(tmp_path: Path, monkeypatch) -> None:
    core = tmp_path / "core.elf"
    _core(core, 4 << 20)
    raw = core.read_bytes()[PAGE:]
    # small windows, two of them: reads inside one, across two (pread), after evictions
    monkeypatch.setattr(elfdump, "MAP_WINDOW", max(64 << 10, mmap.ALLOCATIONGRANULARITY))
    monkeypatch.setattr(elfdump, "MAP_WINDOWS", 2)
    with ElfDump(str(core)) as dump:
        for paddr in list(range(0, 4 << 20, 12345)) + [(64 << 10) - PAGE - 50, (4 << 20) - 100]:
            assert dump.read_phys(paddr, 100) == raw[paddr:paddr + 100]
        assert len(dump._windows) <= 2
