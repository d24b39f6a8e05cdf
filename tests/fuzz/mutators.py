"""Structure-aware mutations: each kind of seed is changed where its parser looks.

``mutate(seed, rng, dest)`` writes one mutated input to ``dest`` (a file, or a directory for
directory seeds) and returns a :class:`Mutation` describing it. A mutation is chosen and applied
with ``rng`` only, so (target, seed, index) always gives the same input. About one in five
mutations of any kind is a plain one (byte flips, a truncation) on top of the structured ones.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from kexecfw.elfnotes import ELF64_EHDR, ELF64_NHDR, ELF64_PHDR, PT_LOAD, PT_NOTE
from kexecfw.memory.devicetree import FDT_HEADER
from kexecfw.purgatory.elfrel import ELF64_RELA, ELF64_SHDR, ELF64_SYM
from kexecfw.vmcore.kdumpfmt import DISK_DUMP_HEADER, FLAT_DATA_HEADER, FLAT_HEADER_SIZE, KDUMP_SUB_HEADER, PAGE_DESC

U64 = (1 << 64) - 1


@dataclass
class Mutation:
    desc: str
    lossy: bool = False    # cut short, or page data or descriptors damaged: pages may be lost


class Buf:
    """A bytearray with the little/big-endian field writes the mutators need."""

    def __init__(self, data: bytes) -> None:
        self.b = bytearray(data)

    def put(self, off: int, width: int, value: int, big: bool = False) -> None:
        if off < 0 or off + width > len(self.b):
            return
        value &= (1 << (8 * width)) - 1
        self.b[off:off + width] = value.to_bytes(width, "big" if big else "little")

    def get(self, off: int, width: int, big: bool = False) -> int:
        return int.from_bytes(self.b[off:off + width], "big" if big else "little")


def boundary(rng: random.Random, width: int, file_size: int = 0, old: int | None = None) -> int:
    """A value at an edge: 0, 1, all ones, the sign bit, the file's size +-1, huge, a neighbour of
    the old value, or random."""
    top = (1 << (8 * width)) - 1
    vals = [0, 1, top, top >> 1, 1 << (8 * width - 1), file_size, file_size - 1, file_size + 1,
            0x1000, 0xFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40, 1 << 52, 1 << 62,
            rng.getrandbits(8 * width)]
    if old is not None:
        vals += [old + 1, old - 1, old + 8, old - 8, old * 2, old << 12, old >> 1, old ^ (1 << rng.randrange(8 * width)),
                 1 << rng.randrange(8 * width)]
    return rng.choice(vals) & top


# --- plain -------------------------------------------------------------------------------

def flip_bytes(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None) -> tuple[bytes, str]:
    b = bytearray(data)
    hi = len(b) if hi is None else min(hi, len(b))
    if hi <= lo:
        return bytes(b), "no bytes to flip"
    n = rng.choice([1, 1, 2, 4, 16])
    where = []
    for _ in range(n):
        i = rng.randrange(lo, hi)
        b[i] = rng.choice([0, 0xFF, 0x80, 0x7F, rng.randrange(256), b[i] ^ (1 << rng.randrange(8))])
        where.append(i)
    return bytes(b), f"{n} byte(s) changed at {', '.join(hex(w) for w in where[:4])}"


def cut_points(data: bytes, rng: random.Random, marks: list[int] = ()) -> int:
    n = len(data)
    picks = [0, 1, n // 2, n - 1, max(n - 4096, 0), rng.randrange(max(n, 1))] + [m for m in marks if 0 <= m < n]
    for m in marks:
        picks += [m - 1, m + 1]
    return max(0, min(n - 1, rng.choice(picks))) if n else 0


def plain(data: bytes, rng: random.Random, marks: list[int] = ()) -> tuple[bytes, Mutation]:
    r = rng.random()
    if r < 0.35:
        cut = cut_points(data, rng, marks)
        return data[:cut], Mutation(f"truncated to {cut:#x} of {len(data):#x} bytes", lossy=True)
    if r < 0.45:
        at = rng.randrange(len(data) + 1)
        junk = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 8, 64])))
        return data[:at] + junk + data[at:], Mutation(f"{len(junk)} bytes inserted at {at:#x}")
    out, what = flip_bytes(data, rng, 0, rng.choice([0x100, 0x1000, 0x4000, len(data)]))
    return out, Mutation(what)


# --- ELF cores (dumps, vmcore headers, kcore) -------------------------------------------------

PHDR_FIELDS = [("p_type", 0, 4), ("p_flags", 4, 4), ("p_offset", 8, 8), ("p_vaddr", 16, 8), ("p_paddr", 24, 8),
               ("p_filesz", 32, 8), ("p_memsz", 40, 8), ("p_align", 48, 8)]
EHDR_FIELDS = [("e_ident[EI_CLASS]", 4, 1), ("e_ident[EI_DATA]", 5, 1), ("e_type", 16, 2), ("e_machine", 18, 2),
               ("e_phoff", 32, 8), ("e_shoff", 40, 8), ("e_phentsize", 54, 2), ("e_phnum", 56, 2),
               ("e_shentsize", 58, 2), ("e_shnum", 60, 2), ("e_shstrndx", 62, 2)]


def _phdrs(b: Buf) -> list[tuple[int, tuple]]:
    try:
        e = ELF64_EHDR.unpack_from(b.b)
    except struct.error:
        return []
    phoff, phnum = e[5], e[10]
    out = []
    for i in range(min(phnum, 4096)):
        at = phoff + i * ELF64_PHDR.size
        if at + ELF64_PHDR.size > len(b.b):
            break
        out.append((at, ELF64_PHDR.unpack_from(b.b, at)))
    return out


def _notes(b: Buf, seg_off: int, seg_size: int) -> list[tuple[int, int, int, bytes]]:
    """(header offset, namesz, descsz, name) of each note in a PT_NOTE segment."""
    out, pos, end = [], seg_off, min(seg_off + seg_size, len(b.b))
    while pos + ELF64_NHDR.size <= end:
        namesz, descsz, _ = ELF64_NHDR.unpack_from(b.b, pos)
        name = bytes(b.b[pos + 12:pos + 12 + namesz]).rstrip(b"\0")
        out.append((pos, namesz, descsz, name))
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return out


VMCOREINFO_KEYS = ["PAGESIZE", "SIZE(printk_ringbuffer)", "OFFSET(printk_ringbuffer.desc_ring)", "SYMBOL(prb)",
                   "NUMBER(VA_BITS)", "NUMBER(kimage_voffset)", "KERNELOFFSET", "SYMBOL(init_uts_ns)",
                   "SIZE(prb_desc)", "SIZE(printk_info)", "OFFSET(prb_desc_ring.count_bits)",
                   "NUMBER(pgtable_l5_enabled)", "SYMBOL(init_top_pgt)", "SYMBOL(swapper_pg_dir)",
                   "NUMBER(PHYS_OFFSET)", "SIZE(page)", "OFFSET(page.flags)", "NUMBER(SECTION_SIZE_BITS)",
                   "NUMBER(MAX_PHYSMEM_BITS)", "SYMBOL(mem_section)", "LENGTH(mem_section)", "NUMBER(TCR_EL1_T1SZ)",
                   "CRASHTIME", "OSRELEASE", "SYMBOL(_stext)", "phys_base"]


def mutate_vmcoreinfo_text(text: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change the VMCOREINFO note's *values*: a KEY=value line gets a boundary number, garbage, is
    removed or duplicated with another value, or a key the readers use is added."""
    lines = text.split(b"\n")
    idx = [i for i, ln in enumerate(lines) if b"=" in ln]
    op = rng.random()
    if not idx or op < 0.1:
        key = rng.choice(VMCOREINFO_KEYS).encode()
        val = rng.choice([b"0", b"-1", b"ffffffffffffffff", b"18446744073709551616", b"4097", b"1", b"zz"])
        lines.insert(rng.randrange(len(lines) + 1), key + b"=" + val)
        return b"\n".join(lines), f"VMCOREINFO line {key.decode()}={val.decode()} added"
    # the keys readers use most are picked more often
    hot = [i for i in idx if any(lines[i].startswith(k.encode() + b"=") for k in VMCOREINFO_KEYS)]
    i = rng.choice(hot) if hot and rng.random() < 0.6 else rng.choice(idx)
    key, _, old = lines[i].partition(b"=")
    is_hex = key.startswith(b"SYMBOL(") or key in (b"KERNELOFFSET", b"phys_base") or key.startswith(b"NUMBER(kimage")
    if op < 0.7:
        try:
            oldv = int(old, 16 if is_hex else 10)
        except ValueError:
            oldv = None
        v = boundary(rng, 8, 0, oldv)
        if rng.random() < 0.2:
            new = b"-" + str(rng.choice([1, 4096, 1 << 63])).encode()
        else:
            new = (b"%x" % v) if is_hex else str(v if rng.random() < 0.7 else v & 0xFFFF).encode()
        lines[i] = key + b"=" + new
        return b"\n".join(lines), f"VMCOREINFO {key.decode()}={new.decode()} (was {old.decode()[:24]})"
    if op < 0.8:
        new = rng.choice([b"", b"0x", b"garbage", b"1e9", b"12 34", b"\xff\xfe", b"0x10", b"=", b"9" * 40])
        lines[i] = key + b"=" + new
        return b"\n".join(lines), f"VMCOREINFO {key.decode()}={new!r} (garbage)"
    if op < 0.9:
        del lines[i]
        return b"\n".join(lines), f"VMCOREINFO line {key.decode()} removed"
    lines.insert(i + 1, key + b"=" + (b"%x" % boundary(rng, 8) if is_hex else b"%d" % boundary(rng, 4)))
    return b"\n".join(lines), f"VMCOREINFO line {key.decode()} duplicated with another value"


def _rewrite_note(b: Buf, phdr_at: int, seg: tuple, note_at: int, new_desc: bytes) -> None:
    """Replace the desc of the note at ``note_at`` (sizes fixed up): the whole PT_NOTE segment is
    rebuilt at the end of the file and its program header pointed there."""
    seg_off, seg_size = seg[2], seg[5]
    blob = bytearray()
    for pos, namesz, descsz, _ in _notes(b, seg_off, seg_size):
        name = bytes(b.b[pos + 12:pos + 12 + namesz])
        dstart = pos + 12 + (namesz + 3) // 4 * 4
        desc = new_desc if pos == note_at else bytes(b.b[dstart:dstart + descsz])
        ntype = b.get(pos + 8, 4)
        blob += ELF64_NHDR.pack(len(name), len(desc), ntype) + name.ljust((len(name) + 3) // 4 * 4, b"\0")
        blob += desc.ljust((len(desc) + 3) // 4 * 4, b"\0")
    at = (len(b.b) + 7) // 8 * 8
    b.b = b.b.ljust(at, b"\0") + blob
    b.put(phdr_at + 8, 8, at)
    b.put(phdr_at + 32, 8, len(blob))
    b.put(phdr_at + 40, 8, len(blob))


def mutate_elf(data: bytes, rng: random.Random, meta: dict) -> tuple[bytes, Mutation]:
    b = Buf(data)
    phdrs = _phdrs(b)
    size = len(data)
    choices = ["ehdr", "phdr", "phdr", "note", "vmcoreinfo", "vmcoreinfo", "vmcoreinfo", "plain"]
    if meta.get("hot"):
        choices += ["ring", "ring", "ring"]
    if meta.get("pt_pages") or any(h[2].startswith("page-table") for h in meta.get("hot", [])):
        choices += ["pagetable", "pagetable"]
    if any(p[1][0] == PT_LOAD for p in phdrs):
        choices += ["loadword"]
    what = rng.choice(choices)
    if what == "ehdr":
        name, off, width = rng.choice(EHDR_FIELDS)
        v = boundary(rng, width, size, b.get(off, width))
        b.put(off, width, v)
        return bytes(b.b), Mutation(f"ELF header {name} = {v:#x}")
    if what == "phdr" and phdrs:
        i = rng.randrange(len(phdrs))
        at, ph = phdrs[i]
        name, off, width = rng.choice(PHDR_FIELDS)
        if rng.random() < 0.3 and name in ("p_offset", "p_filesz", "p_paddr", "p_memsz"):
            v = rng.choice([0, U64, 1 << 63, size, size + 1, size - 1, (1 << 63) - 1, 1 << 52])
        else:
            v = boundary(rng, width, size, b.get(at + off, width))
        b.put(at + off, width, v)
        return bytes(b.b), Mutation(f"phdr[{i}] (type {ph[0]}) {name} = {v:#x}")
    notes = [(at, ph) for at, ph in phdrs if ph[0] == PT_NOTE]
    if what in ("note", "vmcoreinfo") and notes:
        at, ph = notes[0]
        entries = _notes(b, ph[2], ph[5])
        if entries:
            if what == "note":
                pos, namesz, descsz, name = rng.choice(entries)
                field, off = rng.choice([("n_namesz", 0), ("n_descsz", 4), ("n_type", 8)])
                v = boundary(rng, 4, size, b.get(pos + off, 4))
                b.put(pos + off, 4, v)
                return bytes(b.b), Mutation(f"note {name[:16].decode(errors='replace')} {field} = {v:#x}")
            vi = [e for e in entries if e[3] == b"VMCOREINFO"]
            if vi:
                pos, namesz, descsz, _ = vi[0]
                dstart = pos + 12 + (namesz + 3) // 4 * 4
                text, desc = mutate_vmcoreinfo_text(bytes(b.b[dstart:dstart + descsz]), rng)
                _rewrite_note(b, at, ph, pos, text)
                return bytes(b.b), Mutation(desc)
    if what == "ring":
        off, width, label = rng.choice(meta["hot"])
        v = boundary(rng, width, size, b.get(off, width))
        b.put(off, width, v)
        return bytes(b.b), Mutation(f"{label} = {v:#x}")
    if what == "pagetable":
        pts = [h for h in meta.get("hot", []) if h[2].startswith("page-table")]
        if meta.get("pt_pages") and (not pts or rng.random() < 0.7):
            off, n = rng.choice(meta["pt_pages"])
            word = off + rng.randrange(n // 8) * 8
            label = f"page-table page word at file {word:#x}"
        else:
            word, _, label = rng.choice(pts)
        old = b.get(word, 8)
        v = rng.choice([boundary(rng, 8, size, old), old ^ 1, old | 0x80, old & ~0x80, old ^ (1 << rng.randrange(52))])
        b.put(word, 8, v)
        return bytes(b.b), Mutation(f"{label} = {v:#x} (was {old:#x})")
    if what == "loadword":
        loads = [ph for _, ph in phdrs if ph[0] == PT_LOAD and ph[5] >= 8 and ph[2] + ph[5] <= size]
        if loads:
            ph = rng.choice(loads)
            word = ph[2] + rng.randrange(ph[5] // 8) * 8
            v = boundary(rng, 8, size, b.get(word, 8))
            b.put(word, 8, v)
            return bytes(b.b), Mutation(f"u64 in PT_LOAD data at file {word:#x} (paddr {ph[4] + word - ph[2]:#x}) "
                                        f"= {v:#x}")
    marks = [meta.get("page_end", 0)] + [ph[2] for _, ph in phdrs] + [ph[2] + ph[5] for _, ph in phdrs]
    out, m = plain(data, rng, marks)
    return out, m


# --- kdump-compressed ----------------------------------------------------------------------

HEADER_FIELDS = [("header_version", 8, 4), ("status", 0x1A8, 4), ("block_size", 0x1AC, 4),
                 ("sub_hdr_size", 0x1B0, 4), ("bitmap_blocks", 0x1B4, 4), ("max_mapnr", 0x1B8, 4),
                 ("total_ram_blocks", 0x1BC, 4), ("current_cpu", 0x1C8, 4), ("nr_cpus", 0x1CC, 4)]
SUB_FIELDS = [("phys_base", 0, 8), ("dump_level", 8, 4), ("split", 12, 4), ("start_pfn", 16, 8),
              ("end_pfn", 24, 8), ("offset_vmcoreinfo", 32, 8), ("size_vmcoreinfo", 40, 8),
              ("offset_note", 48, 8), ("size_note", 56, 8), ("offset_eraseinfo", 64, 8),
              ("size_eraseinfo", 72, 8), ("start_pfn_64", 80, 8), ("end_pfn_64", 88, 8), ("max_mapnr_64", 96, 8)]
assert DISK_DUMP_HEADER.size == 0x1D0 and KDUMP_SUB_HEADER.size == 104


def kdump_layout(data: bytes) -> dict | None:
    """Where a kdump file's parts lie (from its header), or None when the header is unreadable."""
    if len(data) < DISK_DUMP_HEADER.size:
        return None
    h = DISK_DUMP_HEADER.unpack_from(data)
    block, sub_blocks, bm_blocks, max_mapnr = h[6], h[7], h[8], h[9]
    if block <= 0 or block > 1 << 20 or sub_blocks < 0 or bm_blocks <= 0:
        return None
    sub = KDUMP_SUB_HEADER.unpack_from(data, block) if len(data) >= block + KDUMP_SUB_HEADER.size else None
    if sub and sub[13]:
        max_mapnr = sub[13]
    bitmap_at = (1 + sub_blocks) * block
    bm_len = bm_blocks * block // 2
    desc_at = bitmap_at + bm_blocks * block
    bits = int.from_bytes(data[bitmap_at + bm_len:bitmap_at + bm_len + (max_mapnr + 7) // 8], "little")
    if sub and sub[2] and 0 <= sub[11] <= sub[12] <= max_mapnr:
        # one file of a split set: its descriptors are those of its own pfn range
        bits = bits >> sub[11] & ((1 << (sub[12] - sub[11])) - 1)
    dumped = bits.bit_count()
    return {"block": block, "bitmap_at": bitmap_at, "bm_len": bm_len, "desc_at": desc_at, "dumped": dumped,
            "sub": sub}


def mutate_kdump(data: bytes, rng: random.Random, meta: dict) -> tuple[bytes, Mutation]:
    b = Buf(data)
    lay = kdump_layout(data)
    size = len(data)
    what = rng.choice(["header", "header", "sub", "sub", "bitmap", "desc", "desc", "desc", "pagedata",
                       "vmcoreinfo", "truncate", "truncate", "plain"])
    if lay is None or what == "header":
        name, off, width = rng.choice(HEADER_FIELDS)
        v = boundary(rng, width, size, b.get(off, width))
        if name == "status" and rng.random() < 0.5:
            v = b.get(off, 4) ^ rng.choice([0x1, 0x2, 0x4, 0x8, 0x20, 0x21])
        b.put(off, width, v)
        return bytes(b.b), Mutation(f"kdump header {name} = {v:#x}")
    block = lay["block"]
    if what == "sub":
        name, off, width = rng.choice(SUB_FIELDS)
        v = boundary(rng, width, size, b.get(block + off, width))
        b.put(block + off, width, v)
        return bytes(b.b), Mutation(f"kdump sub header {name} = {v:#x}")
    if what == "bitmap" and lay["bm_len"]:
        which = rng.randrange(2)
        n = min(lay["bm_len"], len(data) - lay["bitmap_at"] - which * lay["bm_len"])
        if n > 0:
            i = lay["bitmap_at"] + which * lay["bm_len"] + rng.randrange(min(n, 1 << 16))
            v = rng.choice([0, 0xFF, rng.randrange(256), b.b[i] ^ (1 << rng.randrange(8))])
            b.b[i] = v
            return bytes(b.b), Mutation(f"bitmap {which + 1} byte at {i:#x} = {v:#x}")
    if what == "desc" and lay["dumped"]:
        k = rng.randrange(lay["dumped"])
        at = lay["desc_at"] + k * PAGE_DESC.size
        name, off, width = rng.choice([("offset", 0, 8), ("size", 8, 4), ("flags", 12, 4), ("page_flags", 16, 8)])
        old = b.get(at + off, width)
        v = boundary(rng, width, size, old)
        if name == "offset" and rng.random() < 0.4:
            v = rng.choice([size, size - 1, size + block, U64, 1 << 63, (1 << 63) - 1])
        if name == "flags" and rng.random() < 0.5:
            v = rng.choice([0, 1, 2, 4, 0x20, 0x21, 0xFF])
        b.put(at + off, width, v)
        return bytes(b.b), Mutation(f"page_desc[{k}].{name} = {v:#x} (was {old:#x})", lossy=name != "page_flags")
    if what == "pagedata" and lay["dumped"]:
        k = rng.randrange(lay["dumped"])
        at = lay["desc_at"] + k * PAGE_DESC.size
        off, n = b.get(at, 8), b.get(at + 8, 4)
        if 0 < off < size and n:
            i = off + rng.randrange(min(n, size - off))
            b.b[i] ^= 1 << rng.randrange(8)
            return bytes(b.b), Mutation(f"bit flipped in page {k}'s data at {i:#x}", lossy=True)
    if what == "vmcoreinfo" and lay["sub"]:
        sub = lay["sub"]
        off_note, size_note = sub[7], sub[8]
        if 0 < off_note < size and 0 < size_note < 1 << 20:
            # the notes as one PT_NOTE-like blob: rewrite VMCOREINFO, append, point the sub header there
            notes = _notes(b, off_note, size_note)
            vi = [e for e in notes if e[3] == b"VMCOREINFO"]
            if vi:
                pos, namesz, descsz, _ = vi[0]
                dstart = pos + 12 + (namesz + 3) // 4 * 4
                text, desc = mutate_vmcoreinfo_text(bytes(b.b[dstart:dstart + descsz]), rng)
                fake_phdr = bytearray(ELF64_PHDR.pack(PT_NOTE, 0, off_note, 0, 0, size_note, size_note, 0))
                holder = Buf(bytes(b.b) + bytes(fake_phdr))
                ph_at = len(b.b)
                _rewrite_note(holder, ph_at, ELF64_PHDR.unpack(fake_phdr), pos, text)
                new_off, new_size = holder.get(ph_at + 8, 8), holder.get(ph_at + 32, 8)
                b.b = holder.b
                b.put(block + 48, 8, new_off)
                b.put(block + 56, 8, new_size)
                return bytes(b.b), Mutation(desc + " (kdump notes)")
    marks = [block, lay["bitmap_at"], lay["desc_at"], lay["desc_at"] + lay["dumped"] * PAGE_DESC.size, size - 1]
    if what == "truncate":
        data_start = lay["desc_at"] + lay["dumped"] * PAGE_DESC.size
        if rng.random() < 0.5 and data_start < size:
            cut = rng.randrange(data_start, size)       # inside the page data (the bitmaps are most of a small dump)
        else:
            cut = cut_points(data, rng, marks)
        return data[:cut], Mutation(f"truncated to {cut:#x} of {size:#x} bytes", lossy=True)
    return plain(data, rng, marks)


# --- flattened -----------------------------------------------------------------------------

def flat_records(data: bytes) -> list[tuple[int, int, int]]:
    """(header position, offset, size) of each record of a flattened stream."""
    out, pos = [], FLAT_HEADER_SIZE
    while pos + 16 <= len(data) and len(out) < 100000:
        off, n = FLAT_DATA_HEADER.unpack_from(data, pos)
        out.append((pos, off, n))
        if off < 0 or n < 0:
            break
        pos += 16 + n
    return out


def mutate_flat(data: bytes, rng: random.Random, meta: dict) -> tuple[bytes, Mutation]:
    recs = flat_records(data)
    what = rng.choice(["record", "record", "record", "inner", "truncate", "truncate", "drop", "plain"])
    b = Buf(data)
    if what == "record" and recs:
        i = rng.randrange(len(recs))
        pos, off, n = recs[i]
        field = rng.choice(["offset", "size"])
        v = boundary(rng, 8, len(data), off if field == "offset" else n)
        if rng.random() < 0.3:
            v = rng.choice([U64, (1 << 63) - 1, 1 << 63, 0, len(data) * 4])
        b.put(pos + (0 if field == "offset" else 8), 8, v, big=True)
        return bytes(b.b), Mutation(f"flattened record {i} {field} = {v:#x} (was {off if field == 'offset' else n:#x})",
                                    lossy=True)
    if what == "inner" and recs and recs[0][2] > DISK_DUMP_HEADER.size:
        # the kdump header inside the first record
        pos = recs[0][0] + 16
        name, off, width = rng.choice(HEADER_FIELDS)
        v = boundary(rng, width, len(data), b.get(pos + off, width))
        b.put(pos + off, width, v)
        return bytes(b.b), Mutation(f"kdump header {name} = {v:#x} (in the flattened stream)")
    if what == "drop" and len(recs) > 2:
        i = rng.randrange(len(recs) - 1)
        pos, _, n = recs[i]
        return data[:pos] + data[pos + 16 + n:], Mutation(f"flattened record {i} removed", lossy=True)
    marks = [p for p, _, _ in recs] + [p + 16 for p, _, _ in recs]
    if what == "truncate":
        cut = cut_points(data, rng, marks)
        return data[:cut], Mutation(f"truncated to {cut:#x} of {len(data):#x} bytes", lossy=True)
    return plain(data, rng, marks)


# --- text: VMCOREINFO, iomem, small sysfs files ---------------------------------------------

def mutate_iomem(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    lines = data.decode("ascii", "replace").split("\n")
    real = [i for i, ln in enumerate(lines) if ":" in ln]
    if not real:
        return plain(data, rng)
    i = rng.choice(real)
    ln = lines[i]
    m = re.match(r"^(\s*)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$", ln)
    op = rng.choice(["swap", "huge", "badhex", "nest", "dup", "remove", "name", "garbage", "overlap", "plain"])
    if m and op == "swap":
        lines[i] = f"{m[1]}{m[3]}-{m[2]} : {m[4]}"
    elif m and op == "huge":
        v = rng.choice(["ffffffffffffffff", "10000000000000000", "7fffffffffffffff", "0", "9" * 40])
        lines[i] = f"{m[1]}{m[2]}-{v} : {m[4]}" if rng.random() < 0.5 else f"{m[1]}{v}-{m[3]} : {m[4]}"
    elif m and op == "badhex":
        lines[i] = f"{m[1]}{rng.choice(['0xg1', '', '-', '12 34', 'zz'])}-{m[3]} : {m[4]}"
    elif m and op == "nest":
        lines[i] = " " * rng.choice([2, 4, 8, 64, 2000]) + ln.lstrip()
    elif op == "dup":
        lines[i + 1:i + 1] = [ln] * rng.choice([1, 2, 1000])
    elif op == "remove":
        del lines[i]
    elif m and op == "name":
        lines[i] = f"{m[1]}{m[2]}-{m[3]} : {rng.choice(['Crash kernel', 'System RAM', 'Kernel code', 'reserved', ''])}"
    elif op == "garbage":
        lines[i] = rng.choice(["", ":", " : ", "-", "0-", "\x00\xff", "ffff : x", "1-2-3 : System RAM"])
    elif m and op == "overlap":
        lines.insert(i + 1, f"{m[1]}{m[2]}-{int(m[3], 16) + 0x1000:x} : System RAM")
    else:
        return plain(data, rng)
    return "\n".join(lines).encode(), Mutation(f"iomem line {i} {op}: {lines[i][:60]!r}" if i < len(lines)
                                               else f"iomem line {i} {op}")


def mutate_small_text(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    """A sysfs/proc value (a number, a CPU list, 'addr size'): numbers replaced by edge values."""
    text = data.decode("ascii", "replace")
    nums = list(re.finditer(r"0x[0-9a-fA-F]+|[0-9a-fA-F]+", text))
    if nums and rng.random() < 0.7:
        m = rng.choice(nums)
        new = rng.choice(["0", "-1", "ffffffffffffffff", "18446744073709551616", "99999999999", "0x", "x",
                          "4294967296", "0-99999999", "3-1", ""])
        return (text[:m.start()] + new + text[m.end():]).encode(), Mutation(f"{text[:20]!r}: {m[0]!r} -> {new!r}")
    new = rng.choice(["", "\n", "garbage\n", "0-3,", ",", "1 2 3 4 5\n", "\xff\xfe", text * 2])
    return new.encode("utf-8", "replace"), Mutation(f"{text[:20]!r} replaced by {new[:20]!r}")


# --- device tree -----------------------------------------------------------------------------

FDT_FIELDS = ["magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap", "version",
              "last_comp_version", "boot_cpuid_phys", "size_dt_strings", "size_dt_struct"]


def mutate_dtb(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    b = Buf(data)
    if len(data) < FDT_HEADER.size:
        return plain(data, rng)
    h = FDT_HEADER.unpack_from(data)
    what = rng.choice(["header", "header", "prop", "prop", "token", "value", "plain"])
    if what == "header":
        i = rng.randrange(10)
        v = boundary(rng, 4, len(data), h[i])
        b.put(i * 4, 4, v, big=True)
        return bytes(b.b), Mutation(f"FDT header {FDT_FIELDS[i]} = {v:#x}")
    s_off, s_size = h[2], h[9]
    block = range(s_off, min(s_off + s_size, len(data)) - 12, 4)
    props = [p for p in block if b.get(p, 4, True) == 3]      # FDT_PROP tokens (and look-alikes)
    if what in ("prop", "value") and props:
        p = rng.choice(props)
        if what == "prop":
            field, off = rng.choice([("len", 4), ("nameoff", 8)])
            v = boundary(rng, 4, len(data), b.get(p + off, 4, True))
            b.put(p + off, 4, v, big=True)
            return bytes(b.b), Mutation(f"FDT property at {p:#x} {field} = {v:#x}")
        n = b.get(p + 4, 4, True)
        if 0 < n < 4096 and p + 12 + n <= len(data):
            i = p + 12 + rng.randrange(n)
            b.b[i] = rng.choice([0, 0xFF, 1, 2, 4, b.b[i] ^ 1])
            return bytes(b.b), Mutation(f"FDT property value byte at {i:#x} = {b.b[i]:#x}")
    if what == "token" and len(block):
        p = rng.choice(block)
        v = rng.choice([1, 2, 3, 4, 9, 0, 0xFFFFFFFF])
        b.put(p, 4, v, big=True)
        return bytes(b.b), Mutation(f"FDT struct word at {p:#x} = token {v:#x}")
    return plain(data, rng, [h[2], h[3], h[4], h[2] + h[9]])


# --- kernel images -----------------------------------------------------------------------------

ARM64_FIELDS = [("code0", 0, 4), ("code1", 4, 4), ("text_offset", 8, 8), ("image_size", 16, 8), ("flags", 24, 8),
                ("res2", 32, 8), ("magic", 56, 4), ("res5", 60, 4)]
ZBOOT_FIELDS = [("MZ", 0, 4), ("zimg", 4, 4), ("payload_offset", 8, 4), ("payload_size", 12, 4)]
# struct setup_header fields (arch/x86/include/uapi/asm/bootparam.h) as (name, offset, width)
SETUP_FIELDS = [("setup_sects", 0x1F1, 1), ("syssize", 0x1F4, 4), ("boot_flag", 0x1FE, 2), ("jump", 0x200, 2),
                ("header", 0x202, 4), ("version", 0x206, 2), ("kernel_version", 0x20E, 2),
                ("loadflags", 0x211, 1), ("code32_start", 0x214, 4), ("initrd_addr_max", 0x22C, 4),
                ("kernel_alignment", 0x230, 4), ("relocatable_kernel", 0x234, 1), ("min_alignment", 0x235, 1),
                ("xloadflags", 0x236, 2), ("cmdline_size", 0x238, 4), ("payload_offset", 0x248, 4),
                ("payload_length", 0x24C, 4), ("setup_data", 0x250, 8), ("pref_address", 0x258, 8),
                ("init_size", 0x260, 4), ("handover_offset", 0x264, 4), ("kernel_info_offset", 0x268, 4)]


def mutate_arm64_image(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    b = Buf(data)
    zboot = data[:2] == b"MZ" and data[4:8] == b"zimg"
    what = rng.choice(["header", "header", "payload", "plain"] + (["zboot", "zboot", "comp"] if zboot else []))
    if what == "zboot":
        name, off, width = rng.choice(ZBOOT_FIELDS)
        v = boundary(rng, width, len(data), b.get(off, width))
        b.put(off, width, v)
        return bytes(b.b), Mutation(f"zboot header {name} = {v:#x}")
    if what == "comp":
        new = rng.choice([b"gzip", b"zstd22", b"lzma", b"xzkern", b"lz4", b"", b"zstd" + b"x" * 40])
        b.b[0x18:0x38] = new[:32].ljust(32, b"\0")
        return bytes(b.b), Mutation(f"zboot compression type = {new[:32]!r}")
    if what == "header":
        name, off, width = rng.choice(ARM64_FIELDS)
        base = 0
        if data[:2] == b"\x1f\x8b" or zboot or data[:4] == b"\x7fELF":
            # the header is inside a compressed payload or an ELF: fields of the wrapper instead
            if data[:4] == b"\x7fELF":
                fname, foff, fwidth = rng.choice(EHDR_FIELDS + [("p_offset", 64 + 8, 8), ("p_filesz", 64 + 32, 8),
                                                                ("p_vaddr", 64 + 16, 8)])
                v = boundary(rng, fwidth, len(data), b.get(foff, fwidth))
                b.put(foff, fwidth, v)
                return bytes(b.b), Mutation(f"vmlinux ELF {fname} = {v:#x}")
            return plain(data, rng)
        v = boundary(rng, width, len(data), b.get(base + off, width))
        if name == "flags" and rng.random() < 0.5:
            v = rng.choice([0, 1, 2, 4, 6, 8, 0xA, 0xF])
        b.put(base + off, width, v)
        return bytes(b.b), Mutation(f"arm64 Image header {name} = {v:#x}")
    if what == "payload":
        lo = 0x200 if zboot else 64
        out, desc = flip_bytes(data, rng, lo, len(data))
        return out, Mutation(f"payload: {desc}")
    return plain(data, rng)


def mutate_bzimage(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    b = Buf(data)
    what = rng.choice(["setup", "setup", "setup", "payload", "plain"])
    if what == "setup":
        name, off, width = rng.choice(SETUP_FIELDS)
        v = boundary(rng, width, len(data), b.get(off, width))
        b.put(off, width, v)
        return bytes(b.b), Mutation(f"setup_header.{name} = {v:#x}")
    if what == "payload" and len(data) > 0x1000:
        setup = ((data[0x1F1] or 4) + 1) * 512
        po, pl = b.get(0x248, 4), b.get(0x24C, 4)
        lo = setup + po
        out, desc = flip_bytes(data, rng, lo, min(lo + pl, len(data)))
        if rng.random() < 0.3:
            cut = lo + rng.randrange(max(pl, 1))
            return data[:cut], Mutation(f"payload truncated at {cut:#x}", lossy=True)
        return out, Mutation(f"payload: {desc}")
    return plain(data, rng, [0x1F1, 0x26C])


# --- the purgatory object ------------------------------------------------------------------------

def mutate_purgatory(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    b = Buf(data)
    e = ELF64_EHDR.unpack_from(data)
    shoff, shnum = e[6], e[12]
    secs = [ELF64_SHDR.unpack_from(data, shoff + i * 64) for i in range(shnum)]
    what = rng.choice(["ehdr", "shdr", "shdr", "sym", "sym", "rela", "rela", "rela", "plain"])
    if what == "ehdr":
        name, off, width = rng.choice(EHDR_FIELDS)
        v = boundary(rng, width, len(data), b.get(off, width))
        b.put(off, width, v)
        return bytes(b.b), Mutation(f"purgatory ELF header {name} = {v:#x}")
    if what == "shdr":
        i = rng.randrange(shnum)
        name, off, width = rng.choice([("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_offset", 24, 8),
                                       ("sh_size", 32, 8), ("sh_link", 40, 4), ("sh_info", 44, 4),
                                       ("sh_addralign", 48, 8), ("sh_entsize", 56, 8)])
        v = boundary(rng, width, len(data), b.get(shoff + i * 64 + off, width))
        b.put(shoff + i * 64 + off, width, v)
        return bytes(b.b), Mutation(f"section {i} {name} = {v:#x}")
    if what == "sym":
        tabs = [s for s in secs if s[1] == 2]           # SHT_SYMTAB
        if tabs:
            t = tabs[0]
            n = t[5] // ELF64_SYM.size
            k = rng.randrange(n)
            at = t[4] + k * ELF64_SYM.size
            name, off, width = rng.choice([("st_name", 0, 4), ("st_info", 4, 1), ("st_shndx", 6, 2),
                                           ("st_value", 8, 8), ("st_size", 16, 8)])
            v = boundary(rng, width, len(data), b.get(at + off, width))
            if name == "st_shndx" and rng.random() < 0.5:
                v = rng.choice([0, 0xFFF1, 0xFFF2, 0xFFFF, shnum, shnum - 1])
            b.put(at + off, width, v)
            return bytes(b.b), Mutation(f"symbol {k} {name} = {v:#x}")
    if what == "rela":
        relas = [s for s in secs if s[1] == 4 and s[5] >= ELF64_RELA.size]   # SHT_RELA
        if relas:
            t = rng.choice(relas)
            k = rng.randrange(t[5] // ELF64_RELA.size)
            at = t[4] + k * ELF64_RELA.size
            field = rng.choice(["r_offset", "sym", "type", "r_addend"])
            if field == "r_offset":
                v = boundary(rng, 8, len(data), b.get(at, 8))
                b.put(at, 8, v)
            elif field == "sym":
                v = rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 16, rng.randrange(1000)])
                b.put(at + 12, 4, v)
            elif field == "type":
                v = rng.choice([0, 1, 2, 4, 10, 11, 257, 258, 260, 261, 275, 282, 283, 286, 0xFFFFFFFF,
                                rng.randrange(1024)])
                b.put(at + 8, 4, v)
            else:
                v = boundary(rng, 8, len(data), b.get(at + 16, 8))
                b.put(at + 16, 8, v)
            return bytes(b.b), Mutation(f"relocation {k} of section at {t[4]:#x}: {field} = {v:#x}")
    return plain(data, rng, [shoff] + [s[4] for s in secs])


# --- crashkernel= strings ------------------------------------------------------------------------

def mutate_crashkernel(data: bytes, rng: random.Random) -> tuple[bytes, Mutation]:
    s = data.decode("utf-8", "replace")
    nums = list(re.finditer(r"(0x[0-9a-fA-F]+|\d+)([KMGTPEkmgtpe]?)", s))
    op = rng.choice(["number", "number", "suffix", "punct", "dup", "range", "option", "plain"])
    if op == "number" and nums:
        m = rng.choice(nums)
        new = rng.choice(["0", "18446744073709551615", "18446744073709551616", "99999999999999999999999",
                          "0x", "0xffffffffffffffff", "-1", "1", "4095", ""]) + m[2]
        s = s[:m.start()] + new + s[m.end():]
    elif op == "suffix" and nums:
        m = rng.choice(nums)
        new = m[1] + rng.choice(["", "K", "M", "G", "T", "P", "E", "x", "MM", "%", "E1"])
        s = s[:m.start()] + new + s[m.end():]
    elif op == "punct":
        at = rng.randrange(len(s) + 1)
        if rng.random() < 0.5 and s:
            at = min(at, len(s) - 1)
            s = s[:at] + s[at + 1:]
        else:
            s = s[:at] + rng.choice([":", ",", "-", "@", "=", " ", ",high", ",low", "crashkernel="]) + s[at:]
    elif op == "dup":
        s = s + " " + s if rng.random() < 0.5 else s.replace("crashkernel=", "crashkernel=" + s.split("=", 1)[-1] + ",")
    elif op == "range":
        many = ",".join(f"{i}M-{i + 1}M:{rng.choice([1, 64, 1 << 20])}M" for i in range(rng.choice([1, 3, 500])))
        s = f"crashkernel={many}" + rng.choice(["", "@16M", ",high", "@"])
    elif op == "option":
        s = rng.choice(["crashkernel=", "crashkernel", "crashkernel=,high", "crashkernel=@", "crashkernel=:",
                        "crashkernel=1G-:", "crashkernel=-:256M", "crashkernel=4G-1G:256M",
                        "crashkernel=256M,low,high", "crashkernel=256M@-1", s + " crashkernel=72M,low"])
    else:
        out, m = plain(data, rng)
        return out, m
    return s.encode(), Mutation(f"crashkernel {op}: {s[:80]!r}")


# --- directories: sysroots, firmware memmap, split sets ---------------------------------------

def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def mutate_tree(root: Path, rng: random.Random, arch: str) -> Mutation:
    """Change one file of a snapshot directory (in place): removed, emptied, cut, garbage, or a
    structured change for the files parsers read (iomem, fdt, kcore notes, memmap entries, sysfs values)."""
    files = _files(root)
    important = [f for f in files if any(k in str(f.relative_to(root)) for k in (
        "proc/iomem", "firmware/fdt", "proc/kcore", "firmware/memmap", "cpu/possible", "cpu/present", "cpu/online",
        "crash_notes", "kexec_crash_size", "kernel/vmcoreinfo", "proc/cmdline", "boot_params", "osrelease",
        "proc/kallsyms", "meminfo"))]
    f = rng.choice(important if important and rng.random() < 0.85 else files)
    rel = str(f.relative_to(root))
    data = f.read_bytes()
    op = rng.random()
    if op < 0.08:
        f.unlink()
        return Mutation(f"{rel} removed")
    if op < 0.14:
        f.write_bytes(b"")
        return Mutation(f"{rel} emptied")
    if op < 0.2 and "memmap" in rel:
        shutil.rmtree(f.parent)
        return Mutation(f"{f.parent.relative_to(root)} removed")
    if op < 0.3 and "memmap" in rel and (f.parent / "start").is_file() and (f.parent / "end").is_file():
        start, end = (f.parent / "start").read_bytes(), (f.parent / "end").read_bytes()
        (f.parent / "start").write_bytes(end)
        (f.parent / "end").write_bytes(start)
        return Mutation(f"{f.parent.relative_to(root)}: start and end swapped")
    if op < 0.34 and "memmap" in rel:
        twin = f.parent.parent / str(rng.choice([99, 100000, 2 ** 31]))
        shutil.copytree(f.parent, twin)
        return Mutation(f"{f.parent.relative_to(root)} duplicated as {twin.name}")
    if rel.endswith("proc/iomem"):
        out, m = mutate_iomem(data, rng)
    elif rel.endswith("firmware/fdt"):
        out, m = mutate_dtb(data, rng)
    elif rel.endswith("proc/kcore"):
        out, m = mutate_elf(data, rng, {})
    elif rel.endswith("boot_params/data"):
        out, m = flip_bytes(data, rng)
        m = Mutation(m)
    elif len(data) < 256:
        out, m = mutate_small_text(data, rng)
    else:
        out, m = plain(data, rng)
    f.write_bytes(out)
    return Mutation(f"{rel}: {m.desc}", m.lossy)


def mutate_split(root: Path, rng: random.Random, meta: dict) -> Mutation:
    parts = sorted(root.iterdir())
    op = rng.random()
    if op < 0.08 and len(parts) > 1:
        victim = rng.choice(parts)
        victim.unlink()
        return Mutation(f"split part {victim.name} removed")
    if op < 0.12:
        shutil.copy(parts[0], root / "part9.kdump")
        return Mutation("split part0 given twice")
    p = rng.choice(parts)
    out, m = mutate_kdump(p.read_bytes(), rng, meta)
    p.write_bytes(out)
    return Mutation(f"split {p.name}: {m.desc}", m.lossy)


# --- entry point -----------------------------------------------------------------------------------

FILE_MUTATORS = {
    "elf-dump": lambda d, rng, meta: mutate_elf(d, rng, meta),
    "core-notes": lambda d, rng, meta: mutate_elf(d, rng, meta),
    "kdump": lambda d, rng, meta: mutate_kdump(d, rng, meta),
    "flat": lambda d, rng, meta: mutate_flat(d, rng, meta),
    "vmcoreinfo": lambda d, rng, meta: (lambda t: (t[0], Mutation(t[1])))(mutate_vmcoreinfo_text(d, rng))
    if rng.random() < 0.8 else plain(d, rng),
    "iomem": lambda d, rng, meta: mutate_iomem(d, rng),
    "dtb": lambda d, rng, meta: mutate_dtb(d, rng),
    "arm64-image": lambda d, rng, meta: mutate_arm64_image(d, rng),
    "bzimage": lambda d, rng, meta: mutate_bzimage(d, rng),
    "purgatory": lambda d, rng, meta: mutate_purgatory(d, rng),
    "crashkernel": lambda d, rng, meta: mutate_crashkernel(d, rng),
    "initrd": lambda d, rng, meta: plain(d, rng, [10, 12, len(d) - 8]),
}


def mutate(seed, rng: random.Random, dest: Path) -> Mutation:
    """Write a mutation of ``seed`` to ``dest``; the seed itself is left as it is."""
    src = Path(seed.path)
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True)
        if seed.kind == "split":
            m = mutate_split(dest, rng, seed.meta)
        else:
            m = mutate_tree(dest, rng, seed.arch)
        return Mutation(f"{seed.id}: {m.desc}", m.lossy)
    data = src.read_bytes()
    # one change most of the time; sometimes two or three stacked (a header field and a value...)
    rounds = rng.choice([1, 1, 1, 1, 1, 2, 3])
    descs, lossy = [], False
    for _ in range(rounds):
        if rng.random() < 0.2:
            data, m = plain(data, rng)
        else:
            try:
                data, m = FILE_MUTATORS[seed.kind](data, rng, seed.meta)
            except (struct.error, IndexError, ValueError, OverflowError):
                data, m = plain(data, rng)      # an earlier round broke the structure this one edits
        descs.append(m.desc)
        lossy |= m.lossy
    dest.write_bytes(data)
    os.chmod(dest, 0o600)
    return Mutation(f"{seed.id}: {'; '.join(descs)}", lossy)
