"""Honest dumps: a damaged input is never saved as complete, and its headers' numbers are bounded.

Seeds: the real x86_64 mini vmcore, the kdump-compressed and flattened files DumpWriter makes of
it, a split set cut out of those, each damaged in one known way (cut short, a descriptor or a
page's data corrupted, a header value out of bounds). The CLI runs as a user would run it.
"""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time

import pytest

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, PT_LOAD
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dumpfile import MemoryLost
from kexecfw.vmcore.kdumpfmt import (DISK_DUMP_HEADER, DUMP_DH_COMPRESSED_ZLIB, KDUMP_SUB_HEADER, PAGE_DESC)
from kexecfw.vmcore.writer import DumpWriter, flatten

from synth import add_pages

PAGE = 4096
# the header fields of struct disk_dump_header by index in DISK_DUMP_HEADER
H_BLOCK_SIZE, H_SUB_HDR_SIZE, H_BITMAP_BLOCKS, H_MAX_MAPNR = 6, 7, 8, 9


def cli(*args: str, as_limit: int = 2 << 30, fsize: int | None = None) -> subprocess.CompletedProcess:
    """`python -m kexecfw ARGS` with an address-space limit (a header number must not make it allocate)."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    r = subprocess.run([sys.executable, "-m", "kexecfw", *args], capture_output=True, text=True, timeout=120,
                       preexec_fn=limits)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture(scope="module")
def kdump(mini_vmcores, tmp_path_factory):
    """The x86_64 mini vmcore as a level-0 zlib kdump file: (path, its bytes, desc_at)."""
    out = tmp_path_factory.mktemp("kd") / "whole.kdump"
    with open_dump(str(mini_vmcores["x86_64"])) as dump:
        DumpWriter(dump, 0, "zlib").write(str(out))
    with open_dump(str(out)) as k:
        desc_at, dumped = k._desc_at, k.dumped_pages
    return out, out.read_bytes(), desc_at, dumped


def descriptors(data: bytes, desc_at: int, n: int) -> list[tuple[int, int, int, int]]:
    return [PAGE_DESC.unpack_from(data, desc_at + i * PAGE_DESC.size) for i in range(n)]


def assert_output_honest(out, src_elf) -> int:
    """OUT.incomplete exists, OUT does not; the output holds only pages it really has, equal to the
    source's. Returns the number of pages it holds."""
    part = out.with_name(out.name + ".incomplete")
    assert part.exists() and not out.exists()
    with open_dump(str(part)) as k, open_dump(str(src_elf)) as src:
        assert k.incomplete
        for r in k.ranges():
            assert k.read_phys(r.start, r.end - r.start) == src.read_phys(r.start, r.end - r.start)
        return k.dumped_pages


@pytest.mark.parametrize("where", ["descriptors", "data"])
def test_cut_kdump_is_saved_incomplete_with_the_lost_pages(kdump, mini_vmcores, tmp_path, where):
    path, data, desc_at, dumped = kdump
    cut = tmp_path / "cut.kdump"
    cut.write_bytes(data[:desc_at + 40 * PAGE_DESC.size] if where == "descriptors" else data[:len(data) - 12000])
    out = tmp_path / "v"
    r = cli("vmcore", "save", "-i", str(cut), str(out))
    assert r.returncode == 6, r.stderr
    assert "pages could not be read, at physical 0x" in r.stderr and "marked incomplete" in r.stderr
    assert "past the end of the file" in r.stderr
    if where == "descriptors":
        assert "cut short" in r.stderr and f"{dumped - 40} pages past the end" in r.stderr
    held = assert_output_honest(out, mini_vmcores["x86_64"])
    assert 0 <= held < dumped
    info = json.loads(cli("vmcore", "info", "--json", str(cut)).stdout)
    assert info["incomplete"] is True and info["lost_pages"] > 0
    assert info["truncated_at"] == hex(cut.stat().st_size) and int(info["data_runs_to"], 16) > cut.stat().st_size
    whole = json.loads(cli("vmcore", "info", "--json", str(path)).stdout)
    assert not whole.get("incomplete") and "lost_pages" not in whole


def test_cut_flattened_stream_is_saved_incomplete(kdump, mini_vmcores, tmp_path):
    path = kdump[0]
    flat = tmp_path / "whole.flat"
    fd = os.open(flat, os.O_WRONLY | os.O_CREAT, 0o600)
    flatten(str(path), fd, piece=PAGE)
    os.close(fd)
    data = flat.read_bytes()
    cut = tmp_path / "cut.flat"
    cut.write_bytes(data[:len(data) * 2 // 3])
    out = tmp_path / "v"
    r = cli("vmcore", "save", "-i", str(cut), str(out))
    assert r.returncode == 6, r.stderr
    assert "flattened stream cut short" in r.stderr and "without its end marker" in r.stderr
    assert "pages could not be read" in r.stderr
    assert_output_honest(out, mini_vmcores["x86_64"])
    assert cli("vmcore", "save", "-i", str(flat), str(tmp_path / "w")).returncode == 0    # the whole stream


def split_part(data: bytes, desc_at: int, dumped: int, start: int, end: int) -> bytes:
    """One file of a makedumpfile --split set made from a whole kdump file: its sub header says it holds
    pfns [start, end), its descriptor table starts with the first page of that range."""
    out = bytearray(data)
    head = DISK_DUMP_HEADER.unpack_from(data)
    block = head[H_BLOCK_SIZE]
    sub = list(KDUMP_SUB_HEADER.unpack_from(data, block))
    sub[2], sub[3], sub[4], sub[11], sub[12] = 1, start, end, start, end
    KDUMP_SUB_HEADER.pack_into(out, block, *sub)
    bitmap_at = (1 + head[H_SUB_HDR_SIZE]) * block
    bitmap2 = data[bitmap_at + head[H_BITMAP_BLOCKS] * block // 2:]
    before = sum(bitmap2[pfn >> 3] >> (pfn & 7) & 1 for pfn in range(start))
    table = data[desc_at + before * PAGE_DESC.size:desc_at + dumped * PAGE_DESC.size]
    out[desc_at:desc_at + len(table)] = table
    return bytes(out)


def test_cut_split_set_is_saved_incomplete(kdump, mini_vmcores, tmp_path):
    path, data, desc_at, dumped = kdump
    with open_dump(str(path)) as k:
        runs = k.ranges()
    mid = runs[len(runs) // 2].start // PAGE
    end = DISK_DUMP_HEADER.unpack_from(data)[H_MAX_MAPNR]
    a, b = tmp_path / "a.kdump", tmp_path / "b.kdump"
    a.write_bytes(split_part(data, desc_at, dumped, 0, mid))
    b.write_bytes(split_part(data, desc_at, dumped, mid, end))
    whole = tmp_path / "whole"
    r = cli("vmcore", "save", "-i", str(a), "-i", str(b), str(whole))
    assert r.returncode == 0, r.stderr                        # the set as made is complete
    b.write_bytes(b.read_bytes()[:desc_at + 3 * PAGE_DESC.size])
    out = tmp_path / "v"
    r = cli("vmcore", "save", "-i", str(a), "-i", str(b), str(out))
    assert r.returncode == 6, r.stderr
    assert "b.kdump is cut short" in r.stderr and "pages could not be read" in r.stderr
    held = assert_output_honest(out, mini_vmcores["x86_64"])
    assert 0 < held < dumped
    info = json.loads(cli("vmcore", "info", "--json", str(a), str(b)).stdout)
    assert info["incomplete"] is True and info["lost_pages"] == dumped - held


def test_absent_memory_is_not_lost(mini_vmcores, tmp_path):
    """Pages partly in a hole (the x86_64 vmcore's PT_LOADs are not page aligned) and pages the
    input's dump level left out are absent, not lost: the copy is complete."""
    data = mini_vmcores["x86_64"].read_bytes()
    ehdr = ELF64_EHDR.unpack_from(data)
    load = next(ph for ph in (ELF64_PHDR.unpack_from(data, ehdr[5] + i * ELF64_PHDR.size) for i in range(ehdr[10]))
                if ph[0] == PT_LOAD)
    _, _, offset, vaddr, paddr, filesz, memsz, _ = load
    edges = tmp_path / "edges.elf"                    # the same memory, its first PT_LOAD starting 0x80 later
    edges.write_bytes(_patch_load(data, offset=offset + 0x80, vaddr=vaddr + 0x80, paddr=paddr + 0x80,
                                  filesz=filesz - 0x80, memsz=memsz - 0x80))
    with open_dump(str(edges)) as elf:
        assert any(r.start % PAGE for r in elf.ranges())
    r = cli("vmcore", "save", "-d", "0", "-i", str(edges), str(tmp_path / "a"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["pages_lost"] == 0, r.stderr
    r = cli("vmcore", "save", "-d", "31", "-i", str(mini_vmcores["x86_64"]), str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    r = cli("vmcore", "save", "-d", "0", "-i", str(tmp_path / "b"), str(tmp_path / "c"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["pages_lost"] == 0, r.stderr


def _first_data_page(data: bytes, desc_at: int, dumped: int) -> int:
    """Index of the first descriptor of a zlib-compressed page (not the shared zero page)."""
    descs = descriptors(data, desc_at, dumped)
    return next(i for i, (off, size, flags, _) in enumerate(descs)
                if flags & DUMP_DH_COMPRESSED_ZLIB and size > 64 and off != descs[0][0])


@pytest.mark.parametrize("damage", ["huge offset", "huge size", "negative offset", "past the end"])
def test_corrupt_descriptor_is_a_lost_page_not_an_io_error(kdump, tmp_path, damage):
    path, data, desc_at, dumped = kdump
    i = _first_data_page(data, desc_at, dumped)
    off, size, flags, pf = descriptors(data, desc_at, dumped)[i]
    off, size = {"huge offset": (1 << 62, size), "huge size": (off, 0xFFFFFFFF),
                 "negative offset": (-(1 << 62), size), "past the end": (len(data) - 10, size)}[damage]
    bad = bytearray(data)
    PAGE_DESC.pack_into(bad, desc_at + i * PAGE_DESC.size, off, size, flags, pf)
    src = tmp_path / "bad.kdump"
    src.write_bytes(bytes(bad))
    r = cli("vmcore", "save", "-i", str(src), str(tmp_path / "v"))
    assert r.returncode == 6, r.stderr
    assert "Invalid argument" not in r.stderr and "cannot write the output" not in r.stderr
    assert "1 pages could not be read" in r.stderr
    assert ("corrupt" if damage == "huge size" else "empty" if damage == "negative offset"
            else "past the end of the file") in r.stderr
    assert (tmp_path / "v.incomplete").exists() and not (tmp_path / "v").exists()


def test_page_that_does_not_decompress_is_lost(kdump, tmp_path):
    path, data, desc_at, dumped = kdump
    i = _first_data_page(data, desc_at, dumped)
    off, size, _, _ = descriptors(data, desc_at, dumped)[i]
    bad = bytearray(data)
    bad[off + 2:off + size] = (b"\xff\xa5" * size)[:size - 2]      # past the zlib header: garbage
    src = tmp_path / "bad.kdump"
    src.write_bytes(bytes(bad))
    with open_dump(str(src)) as k:
        pfn = next(p for lo, hi in k.iter_present_pfns() for p in range(lo, hi)
                   if k._desc_index(p) == i)
        with pytest.raises(MemoryLost, match="does not decompress"):
            k.read_page(pfn)
    r = cli("vmcore", "save", "-i", str(src), str(tmp_path / "v"))
    assert r.returncode == 6 and "does not decompress" in r.stderr, r.stderr
    assert f"at physical {pfn * PAGE:#x}..{(pfn + 1) * PAGE:#x}" in r.stderr


def test_cut_elf_info_names_where_the_data_ends(mini_vmcores, tmp_path):
    data = mini_vmcores["x86_64"].read_bytes()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[:len(data) * 3 // 5])
    info = json.loads(cli("vmcore", "info", "--json", str(cut)).stdout)
    assert info["truncated_at"] == hex(len(data) * 3 // 5)
    assert info["data_runs_to"] == hex(len(data)) and info["incomplete"] and info["lost_pages"] > 0
    text = cli("vmcore", "info", str(cut)).stdout
    assert f"data ends:   at {len(data) * 3 // 5:#x}" in text
    r = cli("vmcore", "save", "-i", str(cut), str(tmp_path / "v"), "--json")
    assert r.returncode == 6 and "pages past the end, at physical 0x" in r.stderr


def _patch_load(data: bytes, **fields: int) -> bytes:
    """``data`` (an ELF vmcore) with its first PT_LOAD's fields (offset, paddr, filesz, memsz) replaced."""
    ehdr = ELF64_EHDR.unpack_from(data)
    phoff, phnum = ehdr[5], ehdr[10]
    names = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
    out = bytearray(data)
    for i in range(phnum):
        ph = list(ELF64_PHDR.unpack_from(data, phoff + i * ELF64_PHDR.size))
        if ph[0] == PT_LOAD:
            for k, v in fields.items():
                ph[names.index(k)] = v
            ELF64_PHDR.pack_into(out, phoff + i * ELF64_PHDR.size, *ph)
            return bytes(out)
    raise AssertionError("no PT_LOAD")


@pytest.mark.parametrize("fields, words", [
    ({"offset": 1 << 63}, "not a file position"),
    ({"filesz": (1 << 64) - 1}, "not a file position"),
    ({"paddr": (1 << 63) - PAGE}, "52-bit physical address space"),
    ({"memsz": 1 << 62}, "52-bit physical address space"),
    ({"paddr": 1 << 51}, "bitmap of page frames"),
])
def test_elf_program_header_numbers_are_bounded(mini_vmcores, tmp_path, fields, words):
    src = tmp_path / "bad.elf"
    src.write_bytes(_patch_load(mini_vmcores["x86_64"].read_bytes(), **fields))
    for args in (["info", str(src)], ["save", "-i", str(src), str(tmp_path / "v")]):
        r = cli("vmcore", *args, as_limit=1 << 30)
        assert r.returncode == 3 and words in r.stderr, r.stderr
    assert os.listdir(tmp_path) == ["bad.elf"]


def test_vmcoreinfo_page_size_is_bounded(mini_vmcores, tmp_path):
    data = mini_vmcores["x86_64"].read_bytes()
    assert data.count(b"PAGESIZE=4096\n") == 1
    src = tmp_path / "bad.elf"
    src.write_bytes(data.replace(b"PAGESIZE=4096\n", b"PAGESIZE=8192\n"))
    r = cli("vmcore", "save", "-i", str(src), str(tmp_path / "v"), as_limit=1 << 30)
    assert r.returncode == 3 and "page size 8192" in r.stderr, r.stderr


@pytest.mark.parametrize("changes, words", [
    ({"block_size": 1 << 30}, "page size 1073741824"),
    ({"block_size": 8192}, "page size 8192"),
    ({"bitmap_blocks": 0xFFFFFFF0}, "truncated inside its bitmaps"),
    ({"sub_hdr_size": 0x7FFFFFF0}, "truncated inside its bitmaps"),
    ({"max_mapnr": 0xFFFFFFFF, "max_mapnr_64": (1 << 40) - 1}, "cannot cover 1099511627775 pages"),
    ({"max_mapnr": 0xFFFFFFFF, "max_mapnr_64": 1 << 41}, "52-bit physical address space"),
    ({"max_mapnr_64": 0x3a0be}, "disagree"),
    ({"max_mapnr": 0x3a0be, "max_mapnr_64": 0x3a0be}, "marks pages past max_mapnr"),
    ({"offset_note": 1 << 62}, "not in the file"),
    ({"size_note": (1 << 64) - 1}, "not in the file"),
])
def test_kdump_header_numbers_are_bounded(kdump, tmp_path, changes, words):
    data = bytearray(kdump[1])
    header = {"block_size": H_BLOCK_SIZE, "sub_hdr_size": H_SUB_HDR_SIZE, "bitmap_blocks": H_BITMAP_BLOCKS,
              "max_mapnr": H_MAX_MAPNR}
    sub_header = {"offset_note": 7, "size_note": 8, "max_mapnr_64": 13}
    at = DISK_DUMP_HEADER.unpack_from(data)[H_BLOCK_SIZE]
    head = list(DISK_DUMP_HEADER.unpack_from(data))
    sub = list(KDUMP_SUB_HEADER.unpack_from(data, at))
    for name, value in changes.items():
        if name in header:
            head[header[name]] = value
        else:
            sub[sub_header[name]] = value
    KDUMP_SUB_HEADER.pack_into(data, at, *sub)
    DISK_DUMP_HEADER.pack_into(data, 0, *head)
    src = tmp_path / "bad.kdump"
    src.write_bytes(bytes(data))
    r = cli("vmcore", "save", "-i", str(src), str(tmp_path / "v"), as_limit=1 << 30)
    assert r.returncode == 3 and words in r.stderr, r.stderr


def test_pages_past_the_end_are_counted_in_linear_time(mini_vmcores, tmp_path):
    """20,000 pages whose descriptors lie past the end of a cut kdump file: counted once each (the
    lost-page path used to walk the dump's ranges for every page)."""
    big = tmp_path / "big.elf"
    add_pages(str(mini_vmcores["x86_64"]), str(big), {0x100000000: b"\x11" * PAGE})
    n = 20000
    data = big.read_bytes()
    ehdr = ELF64_EHDR.unpack_from(data)
    at = ehdr[5] + (ehdr[10] - 1) * ELF64_PHDR.size            # the added PT_LOAD is the last
    ph = list(ELF64_PHDR.unpack_from(data, at))
    ph[5] = ph[6] = n * PAGE                                       # grown over a sparse tail of zeros
    out = bytearray(data)
    ELF64_PHDR.pack_into(out, at, *ph)
    big.write_bytes(bytes(out))
    os.truncate(big, ph[2] + n * PAGE)
    whole = tmp_path / "big.kdump"
    assert cli("vmcore", "save", "-d", "0", "-i", str(big), str(whole)).returncode == 0
    with open_dump(str(whole)) as k:
        desc_at, dumped = k._desc_at, k.dumped_pages
    assert dumped > n
    cut = tmp_path / "cut.kdump"
    cut.write_bytes(whole.read_bytes()[:desc_at + 100 * PAGE_DESC.size])
    t0 = time.monotonic()
    r = cli("vmcore", "save", "-d", "0", "-i", str(cut), str(tmp_path / "v"), "--threads", "1")
    assert r.returncode == 6, r.stderr
    assert f"{dumped - 100} pages past the end" in r.stderr and time.monotonic() - t0 < 20


def test_nothing_written_says_so_and_leaves_no_file(mini_vmcores, tmp_path):
    r = cli("vmcore", "save", "-i", str(mini_vmcores["x86_64"]), str(tmp_path / "v"), fsize=0)
    assert r.returncode == 6 and "nothing was saved" in r.stderr and "0 of" not in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


def test_min_free_message_has_units_that_do_not_round_to_zero(mini_vmcores, tmp_path):
    r = cli("vmcore", "save", "-i", str(mini_vmcores["x86_64"]), "--dir", str(tmp_path / "crash"),
            "--min-free", "1000T")
    assert r.returncode == 4 and "1000 TiB floor" in r.stderr, r.stderr
    assert not (tmp_path / "crash").exists()          # the directory it made for nothing is gone


def test_failed_dir_save_leaves_no_empty_directory(mini_vmcores, tmp_path):
    bad = tmp_path / "bad.elf"
    bad.write_bytes(_patch_load(mini_vmcores["x86_64"].read_bytes(), offset=1 << 63))
    base = tmp_path / "crash"
    r = cli("vmcore", "save", "-i", str(bad), "--dir", str(base), "--min-free", "1M")
    assert r.returncode == 3 and not base.exists()
    base.mkdir()
    r = cli("vmcore", "save", "-i", str(bad), "--dir", str(base), "--min-free", "1M")
    assert r.returncode == 3 and os.listdir(base) == []


def test_dir_save_of_a_cut_dump_keeps_log_and_summary(kdump, tmp_path, expected_dmesg):
    path, data, desc_at, dumped = kdump
    i = _first_data_page(data, desc_at, dumped)                 # a page the log does not need
    off, size, flags, pf = descriptors(data, desc_at, dumped)[i]
    bad = bytearray(data)
    PAGE_DESC.pack_into(bad, desc_at + i * PAGE_DESC.size, len(data) + PAGE, size, flags, pf)
    src = tmp_path / "bad.kdump"
    src.write_bytes(bytes(bad))
    base = tmp_path / "crash"
    r = cli("vmcore", "save", "-i", str(src), "--dir", str(base), "--min-free", "1M")
    assert r.returncode == 6, r.stderr
    (d,) = os.listdir(base)
    assert sorted(os.listdir(base / d)) == ["dmesg.txt", "summary.json", "vmcore.kdump.incomplete"]
    assert (base / d / "dmesg.txt").read_bytes() == expected_dmesg["x86_64"]
    summary = json.loads((base / d / "summary.json").read_text())
    assert summary["complete"] is False and "pages could not be read" in summary["failed"]
    assert summary["dump"]["pages_lost"] > 0 and summary["dump"]["lost_ranges"][0].startswith("0x")


def _ro_fs(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    return mnt


def test_read_only_target_is_a_permission_error(mini_vmcores, tmp_path):
    mnt = _ro_fs(tmp_path)
    try:
        r = cli("vmcore", "save", "-i", str(mini_vmcores["x86_64"]), str(mnt / "v"))
        assert r.returncode == 5 and "Read-only file system" in r.stderr, r.stderr
        r = cli("vmcore", "save", "-i", str(mini_vmcores["x86_64"]), "--dir", str(mnt), "--min-free", "0")
        assert r.returncode == 5 and "Read-only file system" in r.stderr, r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_info_shows_a_crash_time_past_time_t(mini_vmcores, tmp_path):
    """CRASHTIME is the crashed kernel's word: 2^64-1 is printed as given, not a traceback."""
    src = tmp_path / "late.kdump"
    with open_dump(str(mini_vmcores["x86_64"])) as dump:
        dump.notes = [n._replace(desc=n.desc.replace(b"CRASHTIME=1795685684", b"CRASHTIME=18446744073709551615"))
                      if n.name == b"VMCOREINFO" else n for n in dump.notes]
        DumpWriter(dump, 31, "zlib").write(str(src))
    r = cli("vmcore", "info", str(src))
    assert r.returncode == 0 and "crash time:  18446744073709551615 (not a time" in r.stdout, r.stderr
