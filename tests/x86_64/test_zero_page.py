"""The zero page builder on maps we make ourselves: more than 128 e820 entries, a high + low crash pair."""
from __future__ import annotations

import struct
from pathlib import Path

from kexecfw.memory.iomem import parse_iomem
from kexecfw.memory.ranges import Range
from kexecfw.plugins.x86_64.bootparams import (BOOT_E820_ENTRY, E820_MAX_ENTRIES_ZEROPAGE, E820_TYPE_RAM,
                                               E820_TYPE_RESERVED, SETUP_DATA_HEADER, SETUP_E820_EXT,
                                               SETUP_RNG_SEED, E820Entry, build_zero_page, parse_zero_page_e820,
                                               rng_seed)
from kexecfw.plugins.x86_64.bzimage import SetupHeader, parse_bzimage
from kexecfw.plugins.x86_64.e820 import crash_e820


def _chain(zp: bytes, base: int) -> list[tuple[int, bytes]]:
    node = SetupHeader.unpack(zp).setup_data
    out = []
    while node:
        nxt, typ, length = SETUP_DATA_HEADER.unpack_from(zp, node - base)
        at = node - base + SETUP_DATA_HEADER.size
        out.append((typ, zp[at:at + length]))
        node = nxt
    return out


def test_more_than_128_e820_entries_go_to_setup_e820_ext(bzimages: list[Path]) -> None:
    image = parse_bzimage(bzimages[0].read_bytes())
    e820 = [E820Entry(Range(i << 21, (i << 21) + (1 << 20)), E820_TYPE_RAM if i % 2 else E820_TYPE_RESERVED)
            for i in range(150)]
    base = 0x7000_0000_0000 >> 12 << 12           # above 4 GiB: the ext_ fields carry the high halves
    zp = build_zero_page(image, base=base, cmdline="console=ttyS0", kernel_addr=0x1000000, initrd=None,
                         e820=e820, setup_data=[rng_seed()])
    assert parse_zero_page_e820(zp) == e820[:E820_MAX_ENTRIES_ZEROPAGE]
    chain = _chain(zp, base)
    assert [t for t, _ in chain] == [SETUP_E820_EXT, SETUP_RNG_SEED]
    ext = chain[0][1]
    assert len(ext) == (150 - 128) * BOOT_E820_ENTRY.size
    rest = [BOOT_E820_ENTRY.unpack_from(ext, i * BOOT_E820_ENTRY.size) for i in range(150 - 128)]
    assert [(e.range.start, e.range.size, e.type) for e in e820[128:]] == rest
    assert len(chain[1][1]) == 32 and chain[1][1] != bytes(32)
    hdr = SetupHeader.unpack(zp)
    ext_cmd = struct.unpack_from("<I", zp, 0xC8)[0]
    assert (ext_cmd << 32 | hdr.cmd_line_ptr) == base + 4096


def test_crash_e820_with_a_high_and_a_low_crash_region() -> None:
    """crashkernel=512M,high + the automatic low reservation: both are the capture kernel's RAM."""
    iomem = parse_iomem("\n".join([
        "00000000-00000fff : Reserved",
        "00001000-0009fbff : System RAM",
        "000f0000-000fffff : Reserved",
        "00100000-bffdffff : System RAM",
        "  0c000000-0fffffff : Crash kernel",
        "bffe0000-bfffffff : Reserved",
        "fed00000-fed003ff : HPET 0",
        "100000000-23fffffff : System RAM",
        "  21f000000-23effffff : Crash kernel",
        "  23f000000-23fffffff : ACPI Non-volatile Storage",
    ]))
    assert iomem.main_crash_region == Range.inclusive(0x21F000000, 0x23EFFFFFF)
    elfcorehdr = Range(0x23EFFF000, 0x23F000000)
    e820 = crash_e820(iomem.regions, iomem.crash_regions, [elfcorehdr])
    usable = [e.range for e in e820 if e.type == E820_TYPE_RAM]
    assert usable == [Range.inclusive(0x1000, 0x9FBFF), Range.inclusive(0x0C000000, 0x0FFFFFFF),
                      Range(0x21F000000, elfcorehdr.start)]
    assert [(e.range, e.type) for e in e820 if e.type != E820_TYPE_RAM] == [
        (Range.inclusive(0, 0xFFF), E820_TYPE_RESERVED), (Range.inclusive(0xF0000, 0xFFFFF), E820_TYPE_RESERVED),
        (Range.inclusive(0xBFFE0000, 0xBFFFFFFF), E820_TYPE_RESERVED), (Range.inclusive(0x23F000000, 0x23FFFFFFF), 4)]
