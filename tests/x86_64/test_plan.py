"""Dry-run plans for real kernels on real sysroots: the validator's rules, kexec-tools' plan, the zero page."""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw.elfnotes import PT_LOAD, PT_NOTE, parse_elf_header
from kexecfw.load import plan_load
from kexecfw.memory.ranges import Range
from kexecfw.model import LoadOptions
from kexecfw.plugins.x86_64.bootparams import (BP_EXT_CMD_LINE_PTR, BP_EXT_RAMDISK_IMAGE, SETUP_DATA_HEADER,
                                               SETUP_RNG_SEED, E820_TYPE_RAM, parse_zero_page_e820)
from kexecfw.plugins.x86_64.bzimage import SetupHeader, parse_bzimage
from kexecfw.segments.validate import validate_plan
from kexecfw.sysroot import Sysroot
from tests.conftest import REPO

CMDLINE = "console=ttyS0 maxcpus=1 reset_devices"


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory, kexec_tools_debug: str) -> Path:
    """An initrd of the size kexec-tools loaded in the fixture guest (content is ours)."""
    size = int(re.search(r"Loaded initrd at 0x[0-9a-f]+ size (0x[0-9a-f]+)", kexec_tools_debug).group(1), 16)
    path = tmp_path_factory.mktemp("initrd") / "initrd.img"
    path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    return path


def _kexec_tools_segments(debug: str) -> list[tuple[int, int, int]]:
    """(bufsz, mem, memsz) of each segment kexec-tools passed to kexec_load."""
    out = []
    for m in re.finditer(r"segment\[\d+\]\.bufsz = (0x[0-9a-f]+)\nsegment\[\d+\]\.mem   = (0x[0-9a-f]+)\n"
                         r"segment\[\d+\]\.memsz = (0x[0-9a-f]+)", debug):
        out.append(tuple(int(x, 16) for x in m.groups()))
    return out


def _zero_page(plan) -> tuple[bytes, int]:
    seg = plan.segment("boot_params")
    return seg.buf, seg.mem


def test_panic_plan_on_fixture_matches_kexec_tools(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path,
                                                   kexec_tools_debug: str) -> None:
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline=CMDLINE, panic=True, file_load=False)
    plan, ctx = plan_load(opts, Sysroot(x86_sysroot), arch="x86_64")   # validates against the kernel's rules
    theirs = _kexec_tools_segments(kexec_tools_debug)
    flags = int(re.search(r"flags = (0x[0-9a-f]+)", kexec_tools_debug).group(1), 16)
    assert plan.flags == flags == 0x3E0001
    crash = Range.inclusive(0x5D000000, 0x74FFFFFF)
    assert plan.crash_region == crash
    assert all(crash.contains(s.range) for s in plan.segments)
    assert plan.entry in plan.segment("purgatory").range
    # kernel and initrd: the same sizes as kexec-tools'
    kernel, initrd_seg = plan.segment("kernel"), plan.segment("initrd")
    their_kernel = next(t for t in theirs if t[2] == kernel.memsz)
    assert (kernel.bufsz, kernel.memsz) == (their_kernel[0], their_kernel[2])
    assert any((initrd_seg.bufsz, initrd_seg.memsz) == (t[0], t[2]) for t in theirs)
    assert kernel.mem % 0x200000 == 0
    # kexec-tools places the kernel top-down in the crash region as we do: same 2 MiB slot or the next one up
    assert 0 <= kernel.mem - their_kernel[1] <= 0x200000
    # the command line carries the elfcorehdr's address in KiB, as kexec-tools writes it
    elfcorehdr = plan.segment("elfcorehdr")
    assert plan.cmdline == f"{CMDLINE} elfcorehdr={elfcorehdr.mem // 1024}K"
    assert {s.name for s in plan.segments} == {"kernel", "initrd", "elfcorehdr", "boot_params", "purgatory"}


def test_panic_elfcorehdr_matches_kexec_tools_phdrs(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path,
                                                    kexec_tools_debug: str) -> None:
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline=CMDLINE, panic=True, file_load=False)
    plan, _ = plan_load(opts, Sysroot(x86_sysroot), arch="x86_64")
    header = parse_elf_header(plan.segment("elfcorehdr").buf, "elfcorehdr")
    assert header.machine == 62
    theirs = [tuple(int(x, 16) for x in m.groups()) for m in re.finditer(
        r"p_type = (\d+), p_offset = (0x[0-9a-f]+) p_paddr = (0x[0-9a-f]+) p_vaddr = (0x[0-9a-f]+) "
        r"p_filesz = (0x[0-9a-f]+) p_memsz = (0x[0-9a-f]+)", kexec_tools_debug)]
    ours = [(p.type, p.offset, p.paddr, p.vaddr, p.filesz, p.memsz) for p in header.phdrs]
    # kexec-tools also dumps the low 640 KiB through its backup copy; Linux 5.8+ reserves the low
    # 1 MiB in both kernels and its own kexec_file loader leaves it out: so do we
    theirs_wo_low = [t for t in theirs if not (t[0] == PT_LOAD and t[2] < 0x100000)]
    assert ours == theirs_wo_low
    assert [p.type for p in header.phdrs].count(PT_NOTE) == 5


def test_panic_zero_page(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path) -> None:
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline=CMDLINE, panic=True, file_load=False)
    plan, ctx = plan_load(opts, Sysroot(x86_sysroot), arch="x86_64")
    zp, base = _zero_page(plan)
    image = parse_bzimage(fixture_bzimage.read_bytes())
    hdr = SetupHeader.unpack(zp)
    assert hdr.header == image.header.header and hdr.version == image.header.version
    assert hdr.init_size == image.header.init_size
    assert hdr.type_of_loader == 0xFF
    # command line pointer (both halves) points at the NUL-terminated command line in this segment
    cmd_ptr = hdr.cmd_line_ptr | struct.unpack_from("<I", zp, BP_EXT_CMD_LINE_PTR)[0] << 32
    at = cmd_ptr - base
    assert zp[at:].split(b"\0", 1)[0].decode() == plan.cmdline
    # initrd fields
    ext_image, ext_size = struct.unpack_from("<II", zp, BP_EXT_RAMDISK_IMAGE)
    initrd_seg = plan.segment("initrd")
    assert hdr.ramdisk_image | ext_image << 32 == initrd_seg.mem
    assert hdr.ramdisk_size | ext_size << 32 == initrd.stat().st_size
    # ACPI RSDP from the running kernel's boot_params (the guest's dmesg: "ACPI: RSDP 0x00000000000F59C0")
    assert struct.unpack_from("<Q", zp, 0x70)[0] == 0xF59C0
    # e820: the crash map; the usable part is the crash region less the elfcorehdr, plus low RAM
    e820 = parse_zero_page_e820(zp)
    usable = [e.range for e in e820 if e.type == E820_TYPE_RAM]
    elfcorehdr = plan.segment("elfcorehdr").range
    assert Range.inclusive(0x1000, 0x9FBFF) in usable
    assert not any(r.overlaps(elfcorehdr) for r in usable)
    assert sum(r.size for r in usable if r.start >= 0x5D000000) == 384 * 2**20 - elfcorehdr.size
    # setup_data chain: one RNG seed node inside this segment
    node = hdr.setup_data
    seen = []
    while node:
        nxt, typ, length = SETUP_DATA_HEADER.unpack_from(zp, node - base)
        seen.append((typ, length))
        assert node - base + SETUP_DATA_HEADER.size + length <= len(zp)
        node = nxt
    assert seen == [(SETUP_RNG_SEED, 32)]


def test_normal_plan_on_fixture(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path) -> None:
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline="console=ttyS0 marker=42", file_load=False)
    plan, ctx = plan_load(opts, Sysroot(x86_sysroot), arch="x86_64")
    assert plan.flags == 0x3E0000 and plan.cmdline == "console=ttyS0 marker=42"
    zp, _ = _zero_page(plan)
    sysroot = Sysroot(x86_sysroot)
    assert parse_zero_page_e820(zp) == parse_zero_page_e820(sysroot.read_bytes("sys/kernel/boot_params/data"))
    for seg in plan.segments:
        assert not seg.range.overlaps(Range(0, 0x100000)), f"{seg.name} in the low 1 MiB"


def test_normal_plan_on_host_snapshot(host_snapshot: Path, bzimages: list[Path], initrd: Path) -> None:
    for kernel in bzimages:
        opts = LoadOptions(kernel=kernel, initrd=initrd, cmdline="console=ttyS0", file_load=False)
        plan, ctx = plan_load(opts, Sysroot(host_snapshot), arch="x86_64")
        assert plan.syscall == "kexec_load"
        assert {s.name for s in plan.segments} == {"kernel", "initrd", "boot_params", "purgatory"}


def test_cli_dry_run_json(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "kexecfw", "--sysroot", str(x86_sysroot), "--arch", "x86_64",
                          "load", "-p", str(fixture_bzimage), "--initrd", str(initrd), "--append", CMDLINE,
                          "--classic", "--dry-run", "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["syscall"] == "kexec_load" and doc["mode"] == "panic"
    assert [s["name"] for s in doc["segments"]] == ["kernel", "initrd", "elfcorehdr", "boot_params", "purgatory"]


def test_file_load_prediction_panic(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path) -> None:
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline=CMDLINE, panic=True, file_load=True)
    plan, ctx = plan_load(opts, Sysroot(x86_sysroot), arch="x86_64")
    assert plan.syscall == "kexec_file_load"
    assert plan.cmdline == CMDLINE                      # the kernel adds elfcorehdr= itself
    assert plan.flags == 0x2                            # KEXEC_FILE_ON_CRASH
    assert [s.name for s in plan.segments] == ["elfcorehdr", "purgatory", "boot_params", "kernel", "initrd"]
    crash = plan.crash_region
    assert all(crash.contains(s.range) for s in plan.segments)
    assert plan.segment("elfcorehdr").mem == crash.start          # bottom-up, the first fit
    assert plan.entry in plan.segment("purgatory").range
    kernel = plan.segment("kernel")
    assert kernel.mem % 0x200000 == 0 and kernel.memsz == parse_bzimage(fixture_bzimage.read_bytes()).header.init_size
    # the predicted segments obey the kernel's own rules for segments
    from kexecfw.load import kernel_limits
    validate_plan(plan._replace(syscall="kexec_load", flags=0x3E0001), kernel_limits(ctx))
    zp = plan.segment("boot_params").buf
    hdr = SetupHeader.unpack(zp)
    cmd = zp[hdr.cmd_line_ptr - plan.segment("boot_params").mem:].split(b"\0", 1)[0].decode()
    assert cmd == f"elfcorehdr={plan.segment('elfcorehdr').mem:#x} {CMDLINE}"


def test_file_load_prediction_normal_uses_kernels_purgatory(x86_sysroot: Path, fixture_bzimage: Path,
                                                            initrd: Path) -> None:
    from kexecfw.plugins.x86_64.payload import decompress_payload, embedded_purgatory
    from kexecfw.purgatory import PurgatoryLayout
    image = parse_bzimage(fixture_bzimage.read_bytes())
    obj = embedded_purgatory(decompress_payload(image))
    assert obj is not None
    layout = PurgatoryLayout(obj, 62)
    names = {s.name for s in layout.elf.symbols(layout.elf.symtab())}
    assert {"entry64_regs", "stack_end", "purgatory_sha256_digest"} <= names   # what bzImage64_load patches
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline="console=ttyS0", file_load=True)
    plan, _ = plan_load(opts, Sysroot(x86_sysroot), arch="x86_64")
    assert plan.segment("purgatory").memsz == (layout.size + 4095) // 4096 * 4096
    from kexecfw.plugins.x86_64.fileload import _symbol_offset
    assert plan.entry == plan.segment("purgatory").mem + _symbol_offset(layout, "purgatory_start")
    # Linux 6.1 walks System RAM from the bottom: purgatory and boot_params land in the first RAM
    # resource above 0x3000, the kernel above pref_address, the initrd above 16 MiB
    assert plan.segment("purgatory").mem >= 0x3000 and plan.segment("purgatory").range.end <= 0xA0000
    assert plan.segment("kernel").mem >= image.header.pref_address
    assert plan.segment("initrd").mem >= 0x1000000


def test_efi_boot_takes_the_rsdp_from_the_efi_systab(x86_sysroot: Path, fixture_bzimage: Path, initrd: Path,
                                                     tmp_path: Path) -> None:
    """An EFI-booted kernel leaves boot_params.acpi_rsdp_addr at 0 (it found ACPI through EFI); the
    kernel we start without EFI state must get the RSDP from sys/firmware/efi/systab instead."""
    import shutil
    root = tmp_path / "sysroot"
    shutil.copytree(x86_sysroot, root)
    data = bytearray((root / "sys/kernel/boot_params/data").read_bytes())
    struct.pack_into("<Q", data, 0x70, 0)
    (root / "sys/kernel/boot_params/data").chmod(0o644)
    (root / "sys/kernel/boot_params/data").write_bytes(bytes(data))
    (root / "sys/firmware/efi").mkdir(parents=True)
    # the systab of the lab's OVMF guest (its dmesg: "efi: SMBIOS=0x3f918000 ACPI=0x3fb7e000 ACPI 2.0=0x3fb7e014")
    (root / "sys/firmware/efi/systab").write_text("ACPI20=0x3fb7e014\nACPI=0x3fb7e000\nSMBIOS=0x3f918000\n")
    opts = LoadOptions(kernel=fixture_bzimage, initrd=initrd, cmdline=CMDLINE, panic=True, file_load=False)
    plan, _ = plan_load(opts, Sysroot(root), arch="x86_64")
    zp, _ = _zero_page(plan)
    assert struct.unpack_from("<Q", zp, 0x70)[0] == 0x3FB7E014
