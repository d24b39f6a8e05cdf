"""Memory discovery on the fixture guest's sysroot and on this machine's own /sys/firmware/memmap."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kexecfw.memory.model import RegionKind
from kexecfw.memory.ranges import Range
from kexecfw.plugins.x86_64.bootparams import E820_TYPE_RAM, E820_TYPE_RESERVED, parse_zero_page_e820
from kexecfw.plugins.x86_64.e820 import crash_e820, normal_e820
from kexecfw.plugins.x86_64.memmap import iomem_regions, read_firmware_memmap, x86_memory_map
from kexecfw.sysroot import Sysroot


def test_fixture_map_is_firmware_plus_kernel_reservations(x86_sysroot: Path) -> None:
    memmap = x86_memory_map(Sysroot(x86_sysroot))
    assert "sys/firmware/memmap" in memmap.source
    assert memmap.main_crash_region == Range.inclusive(0x5D000000, 0x74FFFFFF)
    assert memmap.kernel_code == Range.inclusive(0x75400000, 0x76201EF1)
    # the firmware says RAM from 0, the kernel reserves page 0: usable RAM starts at 0x1000
    assert memmap.system_ram[0].start == 0
    assert memmap.usable_ram[0] == Range.inclusive(0x1000, 0x9FBFF)
    assert [r.range for r in memmap.of_kind(RegionKind.RESERVED) if r.depth == 0][-1] == \
        Range.inclusive(0xFD00000000, 0xFFFFFFFFFF)


def test_fixture_normal_e820_is_the_boot_e820(x86_sysroot: Path) -> None:
    """The firmware map as e820 equals the table the guest was booted with (its own boot_params)."""
    sysroot = Sysroot(x86_sysroot)
    ours = normal_e820(read_firmware_memmap(sysroot))
    booted = parse_zero_page_e820(sysroot.read_bytes("sys/kernel/boot_params/data"))
    assert ours == booted


def test_fallback_to_iomem_without_firmware_memmap(x86_sysroot: Path, tmp_path: Path) -> None:
    root = tmp_path / "sysroot"
    shutil.copytree(x86_sysroot, root, ignore=shutil.ignore_patterns("memmap"))
    memmap = x86_memory_map(Sysroot(root))
    assert memmap.source.endswith("proc/iomem")
    assert memmap.main_crash_region == Range.inclusive(0x5D000000, 0x74FFFFFF)
    e820 = normal_e820(memmap.regions)
    assert e820[0].range == Range.inclusive(0, 0xFFF) and e820[0].type == E820_TYPE_RESERVED
    assert e820[1].range == Range.inclusive(0x1000, 0x9FBFF) and e820[1].type == E820_TYPE_RAM


def test_crash_e820_matches_kexec_tools_ranges(x86_sysroot: Path, kexec_tools_debug: str) -> None:
    """kexec-tools' "E820 memmap" minus what it excluded for its own segments (backup, elfcorehdr)."""
    sysroot = Sysroot(x86_sysroot)
    memmap = x86_memory_map(sysroot)
    block = kexec_tools_debug.split("E820 memmap:\n", 1)[1].split("/sys/firmware/edd", 1)[0]
    theirs = []
    for line in block.strip().splitlines():
        span, typ = line.split()
        lo, hi = (int(x, 16) for x in span.split("-"))
        theirs.append((Range.inclusive(lo, hi), int(typ.strip("()"))))
    elfcorehdr = Range(0x74F5D000, 0x74F61000)
    backup = Range(0x74F61000, 0x75000000)
    ours = crash_e820(iomem_regions(sysroot), memmap.crash_regions, [elfcorehdr, backup])
    their_reserved = [r for r, t in theirs if t != E820_TYPE_RAM]
    assert [e.range for e in ours if e.type != E820_TYPE_RAM] == their_reserved
    # usable: the same, except kexec-tools' off-by-its-backup-size tail 0x74fffc00-0x74ffffff
    their_usable = [r for r, t in theirs if t == E820_TYPE_RAM and r.start != 0x74FFFC00]
    assert [e.range for e in ours if e.type == E820_TYPE_RAM] == their_usable


def test_host_firmware_memmap() -> None:
    sysroot = Sysroot("/")
    regions = read_firmware_memmap(sysroot)
    if regions is None:
        pytest.skip("this machine has no /sys/firmware/memmap")
    e820 = normal_e820(regions)
    assert len(e820) == len(list(Path("/sys/firmware/memmap").iterdir()))
    assert all(a.range.end <= b.range.start for a, b in zip(e820, e820[1:]))
    memmap = x86_memory_map(sysroot)
    assert memmap.ram_size == sum(e.range.size for e in e820 if e.type == E820_TYPE_RAM)
    booted = Path("/sys/kernel/boot_params/data")
    if booted.is_file():
        assert {e.range for e in parse_zero_page_e820(booted.read_bytes())} >= \
            {e.range for e in e820 if e.type == E820_TYPE_RAM}
