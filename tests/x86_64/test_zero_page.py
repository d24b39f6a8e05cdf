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


def test_efi_handover_from_an_efi_sysroot(x86_sysroot: Path, bzimages: list[Path], tmp_path: Path) -> None:
    """A sysroot as an OVMF guest shows it (values from the lab's EFI guest): efi_info, runtime map, SETUP_EFI."""
    import shutil

    from kexecfw.plugins.x86_64.efi import EFI_MEMORY_DESC, efi_handover
    from kexecfw.plugins.x86_64.running import read_running_kernel
    from kexecfw.sysroot import Sysroot
    root = tmp_path / "sysroot"
    shutil.copytree(x86_sysroot, root)
    bp = bytearray((root / "sys/kernel/boot_params/data").read_bytes())
    struct.pack_into("<4sIIIIIII", bp, 0x1C0, b"EL64", 0x3F9EC018, 0x30, 1, 0x3FB75040, 0x1980, 0, 0)
    (root / "sys/kernel/boot_params/data").chmod(0o644)
    (root / "sys/kernel/boot_params/data").write_bytes(bytes(bp))
    efi = root / "sys/firmware/efi"
    (efi / "runtime-map").mkdir(parents=True)
    (efi / "systab").write_text("ACPI20=0x3fb7e014\nACPI=0x3fb7e000\nSMBIOS=0x3f918000\n")
    (efi / "fw_vendor").write_text("0x3fbea018\n")
    (efi / "config_table").write_text("0x3fbe9018\n")
    regions = [(0x6, 0x3FF50000, 0xFFFFFFFEFFF50000, 0x20), (0x5, 0x3F9ED000, 0xFFFFFFFEFF9ED000, 0x100)]
    for i, (typ, phys, virt, pages) in enumerate(regions):
        d = efi / "runtime-map" / str(i)
        d.mkdir()
        for name, value in (("type", typ), ("phys_addr", phys), ("virt_addr", virt), ("num_pages", pages),
                            ("attribute", 0x800000000000000F)):
            (d / name).write_text(f"{value:#x}\n")
    sysroot = Sysroot(root)
    handover = efi_handover(sysroot, read_running_kernel(sysroot))
    assert handover is not None and handover.memdesc_size == 0x30
    image = parse_bzimage(bzimages[0].read_bytes())
    base = 0x74FF8000
    zp = build_zero_page(image, base=base, cmdline="console=ttyS0", kernel_addr=0x1000000, initrd=None, e820=[],
                         acpi_rsdp_addr=0x3FB7E014, efi=handover)
    sig, systab, desc_size, version, memmap, memmap_size, systab_hi, memmap_hi = struct.unpack_from(
        "<4sIIIIIII", zp, 0x1C0)
    assert (sig, systab | systab_hi << 32, desc_size, version) == (b"EL64", 0x3F9EC018, 0x30, 1)
    at = (memmap | memmap_hi << 32) - base
    assert memmap_size == 2 * 0x30
    for i, (typ, phys, virt, pages) in enumerate(regions):
        assert EFI_MEMORY_DESC.unpack_from(zp, at + i * 0x30) == (typ, 0, phys, virt, pages, 0x800000000000000F)
    (efi_node,) = [data for typ, data in _chain(zp, base) if typ == 4]     # SETUP_EFI
    assert struct.unpack_from("<QQQQ", efi_node) == (0x3FBEA018, 0, 0x3FBE9018, 0x3F918000)
    assert len(efi_node) == 96
