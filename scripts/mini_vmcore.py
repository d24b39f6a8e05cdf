"""Cut an ELF vmcore down to what ``kexecfw vmcore dmesg`` (and ``info``) read: a small test fixture.

    python3 scripts/mini_vmcore.py FULL.elf OUT.elf [--symbols]    # then xz -9 OUT.elf

The pages are found by running the readers on the full dump and recording every physical
read (the printk ring, its descriptors, utsname, the page tables on the way; with ``--symbols``
also the kallsyms tables and per-CPU crash notes ``vmcore notes`` resolves, some 500 KiB more
compressed). The output keeps the ELF header's machine, every PT_NOTE's bytes, and one PT_LOAD
per run of recorded pages with the virtual addresses of the original PT_LOAD holding them.
"""
from __future__ import annotations

import sys

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, PT_LOAD, PT_NOTE
from kexecfw.vmcore import dmesg, kallsyms, prstatus
from kexecfw.vmcore.elfdump import ElfDump
from kexecfw.vmcore.kmem import KernelMemory, kernel_layout

PAGE = 4096


def pages_read(path: str, symbols: bool) -> set[int]:
    dump = ElfDump(path)
    seen: set[int] = set()
    read = dump.read_phys

    def recording(paddr: int, size: int) -> bytes:
        for page in range(paddr // PAGE * PAGE, paddr + max(size, 1), PAGE):
            seen.add(page)
        return read(paddr, size)

    dump.read_phys = recording          # type: ignore[method-assign]
    mem = KernelMemory(dump)
    list(dmesg.records(mem))
    mem.utsname()
    if symbols:
        kallsyms.load(mem)
        kernel_layout(mem)
        prstatus.describe_cpus(dump, log=None, symbols=True)
    return seen


def cut(src: str, dst: str, symbols: bool = False) -> None:
    with open(src, "rb") as f:
        head = f.read(1 << 20)
        (ident, e_type, machine, version, entry, phoff, _, flags, ehsize, phentsize, phnum,
         _, _, _) = ELF64_EHDR.unpack_from(head)
        phdrs = [ELF64_PHDR.unpack_from(head, phoff + i * phentsize) for i in range(phnum)]
        notes = []
        for p in phdrs:
            if p[0] == PT_NOTE:
                f.seek(p[2])
                notes.append((p, f.read(p[5])))
        loads = [p for p in phdrs if p[0] == PT_LOAD]
        wanted = sorted(pages_read(src, symbols))
        runs: list[list[int]] = []
        for page in wanted:
            if runs and runs[-1][1] == page:
                runs[-1][1] += PAGE
            else:
                runs.append([page, page + PAGE])
        pieces = []
        for start, end in runs:
            src_load = next(p for p in loads if p[4] <= start and end <= p[4] + p[5])
            f.seek(src_load[2] + start - src_load[4])
            pieces.append((start, src_load[3] + start - src_load[4] if src_load[3] else 0, f.read(end - start)))
    count = len(notes) + len(pieces)
    offset = ELF64_EHDR.size + count * ELF64_PHDR.size
    out_phdrs, blobs = [], []
    for p, data in notes:
        out_phdrs.append(ELF64_PHDR.pack(PT_NOTE, 0, offset, 0, 0, len(data), len(data), 0))
        blobs.append(data)
        offset += len(data)
    for paddr, vaddr, data in pieces:
        out_phdrs.append(ELF64_PHDR.pack(PT_LOAD, 7, offset, vaddr, paddr, len(data), len(data), 0))
        blobs.append(data)
        offset += len(data)
    header = ELF64_EHDR.pack(ident, e_type, machine, version, entry, ELF64_EHDR.size, 0, flags, ehsize,
                             ELF64_PHDR.size, count, 0, 0, 0)
    with open(dst, "wb") as out:
        out.write(header + b"".join(out_phdrs) + b"".join(blobs))
    print(f"{dst}: {len(pieces)} PT_LOADs, {sum(len(d) for _, _, d in pieces) // PAGE} pages", file=sys.stderr)


if __name__ == "__main__":
    cut(sys.argv[1], sys.argv[2], "--symbols" in sys.argv[3:])

