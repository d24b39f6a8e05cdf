"""Whole arm64 load plans on the real Debian 6.1 guest's snapshot with the real Debian kernel,
compared with what kexec-tools 2.0.25 did for the same panic load (fixtures/arm64/kexec-tools)."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw.elfnotes import parse_elf_header
from kexecfw.load import plan_load
from kexecfw.memory.devicetree import DeviceTree
from kexecfw.memory.ranges import Range
from kexecfw.model import LoadOptions
from kexecfw.purgatory import SHA256_REGION
from kexecfw.sysroot import Sysroot
from tests.conftest import REPO, oracle

CMDLINE = "console=ttyAMA0 maxcpus=1 reset_devices irqpoll panic=-1 lab.capture=1"
INITRD_SIZE = 3147352      # the size of the lab's capture initrd in that run


def kexec_tools_segments(debug: str) -> list[dict[str, int]]:
    segs: dict[int, dict[str, int]] = {}
    for m in re.finditer(r"segment\[(\d+)\]\.(buf|bufsz|mem|memsz)\s*=\s*(0x[0-9a-f]+)", debug):
        segs.setdefault(int(m[1]), {})[m[2]] = int(m[3], 16)
    return [segs[i] for i in sorted(segs)]


def kexec_tools_phdrs(debug: str) -> list[tuple[int, int, int, int, int]]:
    """(type, offset, paddr, vaddr, filesz) of each program header kexec-tools printed, in order."""
    return [tuple(int(x, 0) for x in m.groups()) for m in re.finditer(
        r"header: p_type = (\d+), p_offset = (0x[0-9a-f]+) p_paddr = (0x[0-9a-f]+) p_vaddr = (0x[0-9a-f]+) "
        r"p_filesz = (0x[0-9a-f]+)", debug)]


@pytest.fixture()
def debug(arm64_fixture: Path) -> str:
    return (arm64_fixture / "kexec-tools" / "kexec-p-debug.txt").read_text()


@pytest.fixture()
def initrd(tmp_path: Path) -> Path:
    path = tmp_path / "capture-initrd"
    path.write_bytes(bytes(range(256)) * (INITRD_SIZE // 256) + bytes(INITRD_SIZE % 256))
    return path


def panic_plan(image: Path, initrd: Path, sysroot: Path, **extra):
    options = LoadOptions(kernel=image, initrd=initrd, cmdline=CMDLINE, panic=True, **extra)
    return plan_load(options, Sysroot(sysroot), arch="arm64")


def test_panic_plan_matches_kexec_tools(arm64_image: Path, initrd: Path, arm64_sysroot: Path, debug: str) -> None:
    plan, ctx = panic_plan(arm64_image, initrd, arm64_sysroot)
    theirs = kexec_tools_segments(debug)
    by_address = sorted(plan.segments, key=lambda s: s.mem)
    assert [s.name for s in by_address] == ["kernel", "initrd", "dtb", "purgatory", "elfcorehdr"]
    kernel, initrd_seg, dtb, purgatory, hdr = by_address
    # Same order and addresses for kernel, initrd and elfcorehdr; same sizes.
    for ours, their in ((kernel, theirs[0]), (initrd_seg, theirs[1])):
        assert (ours.mem, ours.memsz, ours.bufsz) == (their["mem"], their["memsz"], their["bufsz"])
    assert (hdr.mem, hdr.memsz) == (theirs[4]["mem"], theirs[4]["memsz"])
    assert dtb.mem == theirs[2]["mem"]                  # right above the initrd
    assert abs(dtb.bufsz - theirs[2]["bufsz"]) < 256    # the same tree, give or take property order/padding
    assert purgatory.mem == dtb.range.end               # right above the DTB, like kexec-tools'
    crash = Range(0xA1A00000, 0xB9A00000)
    assert plan.crash_region == crash
    assert all(crash.contains(s.range) for s in plan.segments)
    assert purgatory.mem <= plan.entry < purgatory.range.end
    assert plan.flags == 0xB70001                       # KEXEC_ARCH_AARCH64 | KEXEC_ON_CRASH, as kexec-tools


def test_elfcorehdr_program_headers_equal_kexec_tools(arm64_image: Path, initrd: Path, arm64_sysroot: Path,
                                                      debug: str) -> None:
    """kexec-tools only got the kernel text right because a _text line was added to kallsyms by hand."""
    plan, _ = panic_plan(arm64_image, initrd, arm64_sysroot)
    header = parse_elf_header(plan.segment("elfcorehdr").buf, "elfcorehdr")
    assert header.machine == 183 and header.type == 4
    ours = [(p.type, p.offset, p.paddr, p.vaddr, p.filesz) for p in header.phdrs]
    assert ours == kexec_tools_phdrs(debug)


def test_dtb_of_the_plan(arm64_image: Path, initrd: Path, arm64_sysroot: Path) -> None:
    plan, _ = panic_plan(arm64_image, initrd, arm64_sysroot)
    chosen = DeviceTree.from_bytes(plan.segment("dtb").buf).properties("/chosen")
    init, hdr = plan.segment("initrd"), plan.segment("elfcorehdr")
    assert chosen["bootargs"] == CMDLINE.encode() + b"\0"
    assert chosen["linux,initrd-start"] == init.mem.to_bytes(8, "big")
    assert chosen["linux,initrd-end"] == (init.mem + INITRD_SIZE).to_bytes(8, "big")
    assert chosen["linux,elfcorehdr"] == hdr.mem.to_bytes(8, "big") + hdr.bufsz.to_bytes(8, "big")
    assert chosen["linux,usable-memory-range"] == bytes.fromhex("00000000a1a00000 0000000018000000")
    assert chosen["kaslr-seed"] != bytes(8)


def test_purgatory_symbols_and_checksum(arm64_image: Path, initrd: Path, arm64_sysroot: Path) -> None:
    plan, ctx = panic_plan(arm64_image, initrd, arm64_sysroot)
    linked = ctx.artifacts["purgatory"]
    assert linked.patched["purgatory_kernel_entry"] == plan.segment("kernel").mem.to_bytes(8, "little")
    assert linked.patched["purgatory_dtb_addr"] == plan.segment("dtb").mem.to_bytes(8, "little")
    others = [s for s in plan.segments if s.name != "purgatory"]
    image = plan.segment("purgatory").buf
    regions_at = linked.symbols["purgatory_sha256_regions"].offset
    regions = [SHA256_REGION.unpack_from(image, regions_at + SHA256_REGION.size * i) for i in range(16)]
    used = [r for r in regions if r[2]]
    assert all(r == (0, 0, 0, bytes(32)) for r in regions[len(used):])
    for s in others:        # each segment's regions tile it, the zero fill in the last (segments.digest)
        mine = sorted(r for r in used if s.mem <= r[0] < s.mem + s.memsz)
        assert mine[0][0] == s.mem and mine[-1][0] + mine[-1][2] == s.mem + s.memsz
        assert all(a[0] + a[1] == b[0] and a[1] == a[2] for a, b in zip(mine, mine[1:]))
        assert b"".join(s.buf[r[0] - s.mem:r[0] - s.mem + r[1]] for r in mine) == s.buf
        assert all(r[3] == hashlib.sha256(s.buf[r[0] - s.mem:r[0] - s.mem + r[1]]).digest() for r in mine)
    assert sum(len([r for r in used if s.mem <= r[0] < s.mem + s.memsz]) for s in others) == len(used)


def test_skip_sha256_leaves_regions_empty(arm64_image: Path, initrd: Path, arm64_sysroot: Path) -> None:
    plan, ctx = panic_plan(arm64_image, initrd, arm64_sysroot, skip_sha256=True)
    linked = ctx.artifacts["purgatory"]
    assert linked.patched["purgatory_sha256_regions"] == bytes(SHA256_REGION.size * 16)


def test_normal_plan(arm64_image: Path, initrd: Path, arm64_sysroot: Path) -> None:
    options = LoadOptions(kernel=arm64_image, initrd=initrd, cmdline="console=ttyAMA0 marker=kexecfw")
    plan, _ = plan_load(options, Sysroot(arm64_sysroot), arch="arm64")
    assert sorted(s.name for s in plan.segments) == ["dtb", "initrd", "kernel", "purgatory"]
    kernel = plan.segment("kernel")
    # The lowest 2 MiB aligned hole of 0x2010000 bytes: 0x40000000-0x4185ffff (24 MiB) is too small.
    assert kernel.mem == 0x42000000
    assert plan.crash_region is None and plan.flags == 0xB70000
    chosen = DeviceTree.from_bytes(plan.segment("dtb").buf).properties("/chosen")
    assert "linux,elfcorehdr" not in chosen and "linux,usable-memory-range" not in chosen
    window = kernel.mem // (32 << 30)
    assert plan.segment("initrd").mem // (32 << 30) == window


def test_cli_dry_run_json(arm64_image: Path, initrd: Path, arm64_sysroot: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "kexecfw", "--sysroot", str(arm64_sysroot), "--arch", "arm64",
                          "load", "-p", str(arm64_image), "--initrd", str(initrd), "--append", CMDLINE,
                          "--dry-run", "--json"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["mode"] == "panic" and doc["arch"] == "arm64"
    assert sorted(s["name"] for s in doc["segments"]) == ["dtb", "elfcorehdr", "initrd", "kernel", "purgatory"]


def test_cli_error_is_one_line(arm64_sysroot: Path, tmp_path: Path) -> None:
    bad = tmp_path / "Image"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    out = subprocess.run([sys.executable, "-m", "kexecfw", "--sysroot", str(arm64_sysroot), "--arch", "arm64",
                          "load", "-p", str(bad), "--dry-run"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "gzip" in out.stderr


def test_dtb_option_replaces_the_firmware_tree(arm64_image: Path, initrd: Path, arm64_sysroot: Path,
                                               tmp_path: Path) -> None:
    dtc = oracle("dtc", "device-tree-compiler")
    fdt = arm64_sysroot / "sys" / "firmware" / "fdt"
    dts = subprocess.run([dtc, "-q", "-I", "dtb", "-O", "dts", str(fdt)], capture_output=True, text=True,
                         check=True).stdout
    dts = dts.replace('model = "linux,dummy-virt";', 'model = "kexecfw test board";', 1)
    own = tmp_path / "board.dtb"
    own.write_bytes(subprocess.run([dtc, "-q", "-I", "dts", "-O", "dtb"], input=dts.encode(), capture_output=True,
                                   check=True).stdout)
    plan, _ = panic_plan(arm64_image, initrd, arm64_sysroot, dtb=own)
    tree = DeviceTree.from_bytes(plan.segment("dtb").buf)
    assert tree.get_string("/", "model") == "kexecfw test board"
    assert tree.get("/chosen", "linux,elfcorehdr") is not None


def test_missing_dtb_option_file_is_one_clear_error(arm64_image: Path, arm64_sysroot: Path, tmp_path: Path) -> None:
    from kexecfw.errors import BadInputError
    with pytest.raises(BadInputError, match="cannot read device tree"):
        panic_plan(arm64_image, None, arm64_sysroot, dtb=tmp_path / "nope.dtb")


def test_file_load_path(arm64_image: Path, initrd: Path, arm64_sysroot: Path, tmp_path: Path) -> None:
    """--file-load: the kernel builds the segments (and the DTB) itself, so --dtb cannot apply."""
    from kexecfw.errors import KexecfwError
    plan, _ = panic_plan(arm64_image, initrd, arm64_sysroot, file_load=True)
    assert plan.syscall == "kexec_file_load" and plan.segments == []
    with pytest.raises(KexecfwError, match="--dtb cannot apply"):
        panic_plan(arm64_image, initrd, arm64_sysroot, file_load=True, dtb=tmp_path / "board.dtb")
