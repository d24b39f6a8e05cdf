"""Test data built from the fixtures: ELF vmcores grown from the real mini vmcores.

``x86_64_with_page_tables`` adds to the x86_64 mini vmcore (the notes and printk pages of a
real Debian 6.1 crash) the page-table pages it lacks, so that tools that walk page tables
(makedumpfile, crash) can read it: the real top-level table (init_top_pgt, 5-level) is kept
and its entries for the kernel image and the direct map get P4D/PUD/PMD pages that map the
image with 2 MiB pages at ``phys_base`` and the direct map with 1 GiB pages, as the kernel
does. The synthetic pages sit above the guest's RAM (at 4 GiB), except the two P4D pages,
which sit where the real top-level entries point. Everything else is the real dump.
"""
from __future__ import annotations

import struct

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, PT_LOAD
from kexecfw.vmcore.elfdump import ElfDump
from kexecfw.vmcore.kmem import KernelMemory

PAGE = 4096
TABLE = 0x63        # present | rw | accessed | dirty
LEAF = 0xE3         # ... | PSE


def _entries(pairs: dict[int, int]) -> bytes:
    page = bytearray(PAGE)
    for i, v in pairs.items():
        struct.pack_into("<Q", page, i * 8, v)
    return bytes(page)


def add_pages(src: str, dst: str, pages: dict[int, bytes]) -> None:
    """Copy ELF dump ``src`` to ``dst`` with extra PT_LOADs holding ``pages`` (paddr -> 4 KiB)."""
    data = open(src, "rb").read()
    ehdr = list(ELF64_EHDR.unpack_from(data))
    phoff, phnum = ehdr[5], ehdr[10]
    phdrs = [list(ELF64_PHDR.unpack_from(data, phoff + i * ELF64_PHDR.size)) for i in range(phnum)]
    new_phnum = phnum + len(pages)
    # Move everything after the headers by a page-rounded shift to make room for the new phdrs.
    old_end = phoff + phnum * ELF64_PHDR.size
    need = phoff + new_phnum * ELF64_PHDR.size
    first = min(p[2] for p in phdrs)
    shift = max(0, -(-(need - first) // PAGE) * PAGE)
    for p in phdrs:
        p[2] += shift
    body = data[first:]
    out_end = first + shift + len(body)
    extra = []
    pos = -(-out_end // PAGE) * PAGE
    blobs = b""
    for paddr, content in sorted(pages.items()):
        extra.append([PT_LOAD, 7, pos + len(blobs), 0, paddr, PAGE, PAGE, 0])
        blobs += content
    ehdr[10] = new_phnum
    out = bytearray(ELF64_EHDR.pack(*ehdr))
    for p in phdrs + extra:
        out += ELF64_PHDR.pack(*p)
    out = out.ljust(first + shift, b"\0")
    del old_end
    out += body
    out = out.ljust(pos, b"\0")
    out += blobs
    open(dst, "wb").write(out)


def x86_64_with_page_tables(mini_elf: str, dst: str) -> None:
    dump = ElfDump(mini_elf)
    mem = KernelMemory(dump)
    info = mem.info
    top = mem.arch.linear(mem.arch.top_vaddr)
    top_page = struct.unpack("<512Q", dump.read_phys(top, PAGE))
    mask = 0x000FFFFFFFFFF000
    phys_base = info.number("phys_base")
    # direct map base: the ELF tells us (vaddr of a System RAM PT_LOAD minus its paddr)
    page_offset = next(v - p for v, p, _ in dump.virtual_segments() if v < 0xFFFFFFFF80000000)
    s = 0x100000000
    pages: dict[int, bytes] = {}
    # kernel image: PML5[511] -> P4D (real address) [511] -> PUD [510] -> PMD of 2 MiB pages
    kimg = 0xFFFFFFFF80000000
    p4d_k = top_page[(kimg >> 48) & 511] & mask
    pud_k, pmd_k = s, s + PAGE
    pmd = {i: (phys_base + i * (2 << 20)) | LEAF for i in range(512)}
    pages[pmd_k] = _entries(pmd)
    pages[pud_k] = _entries({(kimg >> 30) & 511: pmd_k | TABLE})
    p4d_pairs = {(kimg >> 39) & 511: pud_k | TABLE}
    # direct map: 4 GiB from page_offset with 1 GiB pages
    p4d_d = top_page[(page_offset >> 48) & 511] & mask
    puds: dict[int, dict[int, int]] = {}
    for k in range(4):
        va = page_offset + k * (1 << 30)
        puds.setdefault((va >> 39) & 511, {})[(va >> 30) & 511] = (k << 30) | LEAF
    d_pairs = {}
    for n, (i4, entries) in enumerate(sorted(puds.items())):
        addr = s + (2 + n) * PAGE
        pages[addr] = _entries(entries)
        d_pairs[i4] = addr | TABLE
    if p4d_d == p4d_k:
        p4d_pairs.update(d_pairs)
    else:
        pages[p4d_d] = _entries(d_pairs)
    pages[p4d_k] = _entries(p4d_pairs)
    dump.close()
    add_pages(mini_elf, dst, pages)
