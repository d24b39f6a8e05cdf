"""Seeds: the real lab data and files made from it with the project's own writers, built once per run.

Every seed is a file (or a directory: sysroots, split sets, firmware memmaps) under the run's seed
directory with a kind that says which mutators apply and a few facts the mutators use (for an ELF
dump: where the printk ring's fields and the page-table entries a translation reads lie in the file).
Building is deterministic: same data in, same seeds out.
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import json
import lzma
import os
import shutil
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR

REPO = Path(__file__).resolve().parents[2]
GUESTS = REPO / "tests" / "data" / "debian12-guests"
ARCHES = ("arm64", "x86_64")


@dataclass
class Seed:
    id: str
    kind: str
    arch: str
    path: str                      # absolute path of the seed file or directory
    meta: dict = field(default_factory=dict)


# --- helpers -----------------------------------------------------------------------------

def _mini_vmcore(arch: str) -> bytes:
    return lzma.decompress((GUESTS / arch / "capture" / "vmcore-mini.elf.xz").read_bytes())


def _synth():
    """tests/vmcore/synth.py (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("kexecfw_fuzz_synth", REPO / "tests" / "vmcore" / "synth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def elf_facts(path: str) -> dict:
    """Where the fields a reader uses lie in ELF dump ``path``: the printk ring's fields (named from
    VMCOREINFO's offsets) and the page-table entries translation reads, as (file offset, width, label);
    the end of the last PT_LOAD's data; the VMCOREINFO note's position."""
    from kexecfw.errors import KexecfwError
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.dmesg import dmesg_bytes
    from kexecfw.vmcore.kmem import KernelMemory
    hot: list[tuple[int, int, str]] = []
    with open_dump(path) as dump:
        table_reads: list[int] = []
        mem = KernelMemory(dump)
        info = mem.info
        walk_read = mem.read_phys_u64

        def recording(paddr: int, what: str = "") -> int:     # page-table entries (the walks' reads)
            table_reads.append(paddr)
            return walk_read(paddr, what)
        mem.read_phys_u64 = recording       # type: ignore[method-assign]

        def add(vaddr: int | None, width: int, label: str) -> None:
            if vaddr is None:
                return
            try:
                off = dump.file_offset(mem.vtop(vaddr))
            except KexecfwError:
                return
            if off is not None:
                hot.append((off, width, label))
        try:
            prb = mem.read_u64(info.symbol("prb"))
            o = info.offset
            dr, tr = o("printk_ringbuffer.desc_ring"), o("printk_ringbuffer.text_data_ring")
            cnt = o("atomic_long_t.counter") or 0
            for name, width, base in (("prb_desc_ring.count_bits", 4, dr), ("prb_desc_ring.descs", 8, dr),
                                      ("prb_desc_ring.infos", 8, dr), ("prb_desc_ring.head_id", 8, dr),
                                      ("prb_desc_ring.tail_id", 8, dr), ("prb_data_ring.size_bits", 4, tr),
                                      ("prb_data_ring.data", 8, tr)):
                off = o(name)
                if off is not None and base is not None:
                    extra = cnt if name.endswith("_id") else 0
                    add(prb + base + off + extra, width, f"prb {name}")
            count_bits = mem.read_u32(prb + dr + o("prb_desc_ring.count_bits"))
            descs = mem.read_u64(prb + dr + o("prb_desc_ring.descs"))
            infos = mem.read_u64(prb + dr + o("prb_desc_ring.infos"))
            dsize, isize = info.size("prb_desc"), info.size("printk_info")
            for i in range(min(1 << count_bits, 24)):
                add(descs + i * dsize + o("prb_desc.state_var") + cnt, 8, f"desc[{i}].state_var")
                lpos = o("prb_desc.text_blk_lpos")
                add(descs + i * dsize + lpos + o("prb_data_blk_lpos.begin"), 8, f"desc[{i}].begin")
                add(descs + i * dsize + lpos + o("prb_data_blk_lpos.next"), 8, f"desc[{i}].next")
                for f, w in (("seq", 8), ("ts_nsec", 8), ("text_len", 2), ("caller_id", 4)):
                    add(infos + i * isize + (o(f"printk_info.{f}") or 0), w, f"info[{i}].{f}")
        except (KexecfwError, TypeError):
            pass
        try:
            dmesg_bytes(mem)
            mem.utsname()
        except KexecfwError:
            pass
        for paddr in table_reads:
            off = dump.file_offset(paddr)
            if off is not None:
                hot.append((off, 8, f"page-table entry at {paddr:#x}"))
        # the pages of the tables: the top level (a symbol) and every table a walk read
        ps = dump.page_size
        table_pages = {paddr & ~(ps - 1) for paddr in table_reads}
        for name in ("init_top_pgt", "swapper_pg_dir"):
            va = info.symbol(name)
            if va is not None:
                try:
                    table_pages.add(mem.vtop(va) & ~(ps - 1))
                except KexecfwError:
                    pass
        pt_pages = []
        for page in sorted(table_pages):
            off = dump.file_offset(page)
            if off is not None:
                pt_pages.append((off, ps))
        loads = [(p.offset, p.filesz) for p in dump.header.phdrs if p.type == 1]
        page_end = max((o + n for o, n in loads), default=0)
        vi = next((n for n in dump.notes if n.name == b"VMCOREINFO"), None)
    seen: set[int] = set()
    unique = [h for h in hot if not (h[0] in seen or seen.add(h[0]))]
    return {"hot": unique, "page_end": page_end, "pt_pages": pt_pages,
            "vmcoreinfo_at": vi.offset if vi is not None else None}


def _kdump_facts(path: str) -> dict:
    from kexecfw.vmcore.kdumpfmt import DISK_DUMP_HEADER
    data = Path(path).read_bytes()
    block = DISK_DUMP_HEADER.unpack_from(data)[6]
    return {"block_size": block}


def _write_dump(src: str, out: str, **kw) -> None:
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.writer import DumpWriter
    with open_dump(src) as dump:
        DumpWriter(dump, threads=1, **kw).write(out)


def split_set(kdump: str, dest: Path, parts: int = 2) -> list[str]:
    """A makedumpfile --split set made from one kdump file: each part keeps the whole file but is
    marked split with its own pfn range, and its page descriptors start at that range's first page
    (what makedumpfile writes; the page data offsets stay valid)."""
    from kexecfw.vmcore.kdumpfile import KdumpFile
    from kexecfw.vmcore.kdumpfmt import KDUMP_SUB_HEADER, PAGE_DESC
    data = Path(kdump).read_bytes()
    k = KdumpFile(kdump)
    try:
        ranges = k.ranges()
        pfns = [p for r in ranges for p in range(r.start // k.page_size, r.end // k.page_size)]
        cuts = [0] + [pfns[len(pfns) * i // parts] for i in range(1, parts)] + [k.max_mapnr]
        desc_at, block = k._desc_at, k.page_size
        counts = [k._count_before(c) for c in cuts]
    finally:
        k.close()
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(parts):
        out = bytearray(data)
        sub = list(KDUMP_SUB_HEADER.unpack_from(out, block))
        sub[2] = 1                               # split
        sub[3], sub[4] = cuts[i], cuts[i + 1]    # start_pfn, end_pfn (32-bit fields)
        sub[11], sub[12] = cuts[i], cuts[i + 1]  # start_pfn_64, end_pfn_64
        KDUMP_SUB_HEADER.pack_into(out, block, *sub)
        first = desc_at + counts[i] * PAGE_DESC.size
        n = (counts[i + 1] - counts[i]) * PAGE_DESC.size
        out[desc_at:desc_at + n] = data[first:first + n]
        p = dest / f"part{i}.kdump"
        p.write_bytes(bytes(out))
        paths.append(str(p))
    return paths


# --- synthetic kernel images ---------------------------------------------------------------

ARM64_IMAGE_HEADER = struct.Struct("<IIQQQQQQII")   # arch/arm64/include/asm/image.h


def arm64_image(image_size: int = 2 << 20, file_size: int = 64 << 10) -> bytes:
    """A raw arm64 Image: a valid header (4K pages, placement anywhere) over filler."""
    flags = 1 << 1 | 1 << 3
    header = ARM64_IMAGE_HEADER.pack(0x14000000, 0, 0, image_size, flags, 0, 0, 0, 0x644D5241, 0)
    body = bytes((i * 7) & 0xFF for i in range(file_size - len(header)))
    return header + body


def arm64_zboot(payload: bytes, comp: str) -> bytes:
    """An EFI zboot image (drivers/firmware/efi/libstub/zboot-header.S) around ``payload``."""
    if comp == "gzip":
        packed = gzip.compress(payload, mtime=0)
    else:
        import zstandard
        packed = zstandard.ZstdCompressor(level=3).compress(payload)
    head = bytearray(0x200)
    struct.pack_into("<I4sII", head, 0, 0x5A4D, b"zimg", len(head), len(packed))
    name = comp.encode() + (b"22" if comp == "zstd" else b"")
    head[0x18:0x18 + len(name)] = name
    return bytes(head) + packed


def arm64_vmlinux(image: bytes) -> bytes:
    """An arm64 vmlinux ELF with one PT_LOAD holding ``image`` at _text."""
    from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR
    text = 0xFFFF800008000000
    ehdr = ELF64_EHDR.pack(b"\x7fELF\x02\x01\x01" + bytes(9), 2, 183, 1, text, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = ELF64_PHDR.pack(1, 5, 0x1000, text, 0x1000, len(image), len(image), 0x10000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + image


def x86_bzimage(payload_elf: bytes) -> bytes:
    """A bzImage (boot protocol 2.15) with 4 setup sectors and a gzip payload holding ``payload_elf``."""
    setup = bytearray(5 * 512)
    struct.pack_into("<B", setup, 0x1F1, 4)                     # setup_sects
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)                # boot_flag
    setup[0x200:0x202] = b"\xeb\x66"                            # jump; byte 0x201 = header length
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)                # version
    struct.pack_into("<H", setup, 0x20E, 0x800 - 0x200)         # kernel_version string at 0x800
    struct.pack_into("<B", setup, 0x211, 1)                     # loadflags: LOADED_HIGH
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)            # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x200000)              # kernel_alignment
    struct.pack_into("<B", setup, 0x234, 1)                     # relocatable_kernel
    struct.pack_into("<B", setup, 0x235, 21)                    # min_alignment
    struct.pack_into("<H", setup, 0x236, 0x1 | 0x2 | 0x20)      # xloadflags: KERNEL_64, ABOVE_4G, 5LEVEL
    struct.pack_into("<I", setup, 0x238, 2047)                  # cmdline_size
    payload = gzip.compress(bytes(4096) + payload_elf + bytes(4096), mtime=0)
    struct.pack_into("<II", setup, 0x248, 0x400, len(payload))  # payload_offset, payload_length
    struct.pack_into("<Q", setup, 0x258, 0x1000000)             # pref_address
    struct.pack_into("<I", setup, 0x260, 16 << 20)              # init_size
    setup[0x800:0x800 + 32] = b"6.1.0-fuzz (fuzz@kexecfw) #1 SMP\0"[:32]
    kernel = bytearray(0x400) + payload + bytes(0x400)
    return bytes(setup) + bytes(kernel)


def _cpio(files: dict[str, bytes]) -> bytes:
    from kexecfw.lab.cpio import CpioWriter
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for name, data in files.items():
        w.file(name, data)
    w.close()
    return buf.getvalue()


CRASHKERNEL_STRINGS = [
    "crashkernel=256M", "crashkernel=384M@0x40000000", "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M",
    "crashkernel=512M-2G:64M,2G-:128M@16M", "crashkernel=256M,high crashkernel=72M,low",
    "console=ttyS0 crashkernel=auto quiet", "crashkernel=0x10000000", "root=/dev/vda crashkernel=1G-:256M,high",
    "crashkernel=128M,low", "crashkernel=2G-8G:512M crashkernel=256M",
]


# --- the seed set --------------------------------------------------------------------------

def build(dest: str | Path, real_kernels: bool = False) -> list[Seed]:
    """Build every seed into ``dest`` (a fresh directory); returns them, also saved as seeds.json."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    seeds: list[Seed] = []

    def put(sid: str, kind: str, arch: str, name: str, data: bytes | None = None, **meta) -> str:
        p = dest / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            p.write_bytes(data)
        seeds.append(Seed(sid, kind, arch, str(p), meta))
        return str(p)

    for arch in ARCHES:
        g = GUESTS / arch
        mini = put(f"{arch}-mini-elf", "elf-dump", arch, f"elf/{arch}-mini.elf", _mini_vmcore(arch))
        seeds[-1].meta.update(elf_facts(mini))
        written = str(dest / f"elf/{arch}-written.elf")
        _write_dump(mini, written, elf=True, dump_level=0)
        put(f"{arch}-written-elf", "elf-dump", arch, f"elf/{arch}-written.elf", **elf_facts(written))
        for codec in ("zlib", "zstd"):
            out = str(dest / f"kdump/{arch}-{codec}.kdump")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            _write_dump(mini, out, compress=codec)
            put(f"{arch}-{codec}-kdump", "kdump", arch, f"kdump/{arch}-{codec}.kdump", **_kdump_facts(out))
        flat = dest / f"flat/{arch}.flat"
        flat.parent.mkdir(parents=True, exist_ok=True)
        from kexecfw.vmcore.writer import flatten
        fd = os.open(flat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            flatten(str(dest / f"kdump/{arch}-zlib.kdump"), fd)
        finally:
            os.close(fd)
        put(f"{arch}-flat", "flat", arch, f"flat/{arch}.flat")
        split_dir = dest / f"split/{arch}"
        split_set(str(dest / f"kdump/{arch}-zlib.kdump"), split_dir)
        put(f"{arch}-split", "split", arch, f"split/{arch}", block_size=_kdump_facts(
            str(dest / f"kdump/{arch}-zlib.kdump"))["block_size"])
        put(f"{arch}-hdr-notes", "core-notes", arch, f"notes/{arch}-hdr+notes.bin",
            (g / "capture" / "vmcore-hdr+notes.bin").read_bytes())
        put(f"{arch}-kcore", "core-notes", arch, f"notes/{arch}-kcore", (g / "sysroot" / "proc" / "kcore").read_bytes())
        from kexecfw.elfnotes import read_core_notes
        _, notes = read_core_notes((g / "sysroot" / "proc" / "kcore").read_bytes(), "kcore")
        vi = next(n.desc for n in notes if n.name == b"VMCOREINFO")
        put(f"{arch}-vmcoreinfo", "vmcoreinfo", arch, f"vmcoreinfo/{arch}.txt", vi)
        put(f"{arch}-iomem", "iomem", arch, f"iomem/{arch}-first.txt", (g / "sysroot" / "proc" / "iomem").read_bytes())
        put(f"{arch}-capture-iomem", "iomem", arch, f"iomem/{arch}-capture.txt",
            (g / "capture" / "iomem.txt").read_bytes())
        root = dest / f"sysroot/{arch}"
        shutil.copytree(g / "sysroot", root, symlinks=True)
        put(f"{arch}-sysroot", "sysroot", arch, f"sysroot/{arch}")
        put(f"{arch}-purgatory", "purgatory", arch, f"purgatory/{arch}.ro",
            (REPO / "plugins" / arch / "purgatory" / "purgatory.ro").read_bytes())
    # x86_64 with page tables: translation walks real tables
    pt = str(dest / "elf/x86_64-pagetables.elf")
    _synth().x86_64_with_page_tables(str(dest / "elf/x86_64-mini.elf"), pt)
    from kexecfw.vmcore.elfdump import ElfDump
    with ElfDump(str(dest / "elf/x86_64-mini.elf")) as d:
        old = len(d.header.phdrs)
    with ElfDump(pt) as d:
        pt_pages = [(p.offset, p.filesz) for p in d.header.phdrs[old:]]
    facts = elf_facts(pt)
    facts["pt_pages"] += pt_pages
    put("x86_64-pagetables-elf", "elf-dump", "x86_64", "elf/x86_64-pagetables.elf", **facts)
    # the same dumps without virtual addresses in their program headers (p_vaddr 0): every kernel
    # address is then translated by walking the dump's page tables, as for a kdump file
    for sid, src in (("arm64-walk-elf", "elf/arm64-mini.elf"), ("x86_64-walk-elf", "elf/x86_64-pagetables.elf")):
        data = bytearray((dest / src).read_bytes())
        phoff, phnum = ELF64_EHDR.unpack_from(data)[5], ELF64_EHDR.unpack_from(data)[10]
        for i in range(phnum):
            struct.pack_into("<Q", data, phoff + i * ELF64_PHDR.size + 16, 0)
        name = f"elf/{sid}.elf"
        put(sid, "elf-dump", sid.split("-")[0], name, bytes(data))
        facts = elf_facts(str(dest / name))
        if sid.startswith("x86_64"):
            facts["pt_pages"] += pt_pages       # only p_vaddr changed: the added tables lie where they did
        seeds[-1].meta.update(facts)
    # firmware memmap (x86_64)
    mm = dest / "memmap/x86_64"
    shutil.copytree(GUESTS / "x86_64" / "sysroot" / "sys" / "firmware" / "memmap", mm / "sys/firmware/memmap")
    put("x86_64-memmap", "memmap", "x86_64", "memmap/x86_64")
    # device trees: the firmware's, and one with the capture kernel's /chosen
    fdt = (GUESTS / "arm64" / "sysroot" / "sys" / "firmware" / "fdt").read_bytes()
    put("arm64-fdt", "dtb", "arm64", "dtb/arm64-firmware.dtb", fdt)
    from kexecfw.memory.devicetree import DeviceTree
    tree = DeviceTree.from_bytes(fdt)
    for prop in sorted((GUESTS / "arm64" / "capture" / "chosen").iterdir()):
        if prop.name != "name":
            tree.set("/chosen", prop.name, prop.read_bytes())
    put("arm64-capture-dtb", "dtb", "arm64", "dtb/arm64-capture.dtb", tree.to_bytes())
    # kernel images
    image = arm64_image()
    put("arm64-image", "arm64-image", "arm64", "kernel/arm64-Image", image)
    put("arm64-image-gz", "arm64-image", "arm64", "kernel/arm64-Image.gz", gzip.compress(image, mtime=0))
    put("arm64-zboot-gzip", "arm64-image", "arm64", "kernel/arm64-zboot-gzip.efi", arm64_zboot(image, "gzip"))
    put("arm64-zboot-zstd", "arm64-image", "arm64", "kernel/arm64-zboot-zstd.efi", arm64_zboot(image, "zstd"))
    put("arm64-vmlinux", "arm64-image", "arm64", "kernel/arm64-vmlinux", arm64_vmlinux(image))
    x86_ro = (REPO / "plugins" / "x86_64" / "purgatory" / "purgatory.ro").read_bytes()
    put("x86_64-bzimage", "bzimage", "x86_64", "kernel/x86_64-bzImage", x86_bzimage(x86_ro))
    if real_kernels:    # the Debian kernels the lab already downloaded; never downloaded here
        from kexecfw.lab.cache import cache_dir
        for k in sorted((cache_dir() / "kernels").glob("*/*/vmlinuz-*")):
            arch = "arm64" if "arm64" in k.parent.parent.name else "x86_64"
            kind = "arm64-image" if arch == "arm64" else "bzimage"
            put(f"real-{k.name}", kind, arch, f"kernel/real-{k.name}", k.read_bytes())
    # crashkernel= strings
    for i, s in enumerate(CRASHKERNEL_STRINGS):
        put(f"crashkernel-{i}", "crashkernel", "any", f"crashkernel/{i}.txt", s.encode())
    # initrds
    cpio = _cpio({"init": b"#!/bin/sh\nexec /bin/sh\n", "etc/hostname": b"capture\n",
                  "bin/busybox": bytes(range(256)) * 64})
    put("initrd-gzip", "initrd", "any", "initrd/initrd.cpio.gz", gzip.compress(cpio, mtime=0))
    put("initrd-xz", "initrd", "any", "initrd/initrd.cpio.xz", lzma.compress(cpio))
    import zstandard
    put("initrd-zstd", "initrd", "any", "initrd/initrd.cpio.zst", zstandard.ZstdCompressor(level=3).compress(cpio))
    put("initrd-cpio", "initrd", "any", "initrd/initrd.cpio", cpio)
    (dest / "seeds.json").write_text(json.dumps([asdict(s) for s in seeds], indent=1))
    return seeds


def load(dest: str | Path) -> list[Seed]:
    return [Seed(**d) for d in json.loads((Path(dest) / "seeds.json").read_text())]
