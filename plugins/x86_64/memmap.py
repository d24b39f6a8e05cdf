"""x86_64 memory discovery: the firmware's e820 map, the kernel's /proc/iomem view, EFI's runtime map.

/sys/firmware/memmap is the e820 table as the firmware handed it over (what
the next kernel should see for a normal load: kexec-tools uses it too);
/proc/iomem adds what the running kernel did with it (crash regions, kernel
code, page 0 reserved). The map we return is the firmware's regions plus
iomem's reservations nested in them; with no firmware map, iomem alone.
"""
from __future__ import annotations

import os

from kexecfw.errors import BadInputError
from kexecfw.memory.iomem import classify, read_iomem
from kexecfw.memory.model import MemoryMap, Region, RegionKind
from kexecfw.memory.ranges import ADDRESS_LIMIT, Range, merge
from kexecfw.records import Record
from kexecfw.sysroot import Sysroot

FIRMWARE_MEMMAP = "sys/firmware/memmap"
EFI_RUNTIME_MAP = "sys/firmware/efi/runtime-map"

# what the kernel's e820 names become in our classification (arch/x86/kernel/e820.c e820_type_to_string)
_FIRMWARE_KINDS = {
    "system ram": RegionKind.RAM,
    "reserved": RegionKind.RESERVED,
    "acpi tables": RegionKind.ACPI,
    "acpi non-volatile storage": RegionKind.NVS,
    "persistent memory": RegionKind.PMEM,
    "persistent memory (legacy)": RegionKind.PMEM,
    "unusable memory": RegionKind.RESERVED,
    "soft reserved": RegionKind.RESERVED,
}
# iomem entries that refine a firmware map: the running kernel's own reservations
_IOMEM_REFINEMENTS = (RegionKind.CRASH, RegionKind.CRASH_LOW, RegionKind.KERNEL_CODE, RegionKind.KERNEL_RODATA,
                      RegionKind.KERNEL_DATA, RegionKind.KERNEL_BSS)
_RESERVING = (RegionKind.RESERVED, RegionKind.ACPI, RegionKind.NVS, RegionKind.PMEM)


class EfiRuntimeRegion(Record, frozen=True):
    """One /sys/firmware/efi/runtime-map/N entry (an EFI memory descriptor the kernel keeps mapped)."""

    type: int
    phys_addr: int
    virt_addr: int
    num_pages: int
    attribute: int

    @property
    def range(self) -> Range:
        return Range(self.phys_addr, self.phys_addr + self.num_pages * 4096)


def _numbered_entries(sysroot: Sysroot, rel: str) -> list[str] | None:
    """The names of ``rel``'s numbered subdirectories (0, 1, ... 10), in numeric order; None without ``rel``."""
    directory = sysroot.file(rel)
    if not os.path.isdir(directory):
        return None
    return sorted((name for name in os.listdir(directory) if name.isdigit()), key=int)


def read_firmware_memmap(sysroot: Sysroot) -> list[Region] | None:
    """The firmware map, sorted by start; None when the sysroot has none."""
    entries = _numbered_entries(sysroot, FIRMWARE_MEMMAP)
    if entries is None:
        return None
    regions: list[Region] = []
    for entry in entries:
        rel = f"{FIRMWARE_MEMMAP}/{entry}"
        try:
            start = int(sysroot.read_text(f"{rel}/start").strip(), 16)
            last = int(sysroot.read_text(f"{rel}/end").strip(), 16)
        except ValueError:
            raise BadInputError(f"{sysroot.file(rel)}: start/end are not hex numbers") from None
        span = Range.read(start, last, sysroot.file(rel))
        if span.size >= 1 << 64:
            # an e820 entry is (addr, size) in u64s: the kernel cannot have printed one this big
            raise BadInputError(f"{sysroot.file(rel)}: {start:#x}-{last:#x} spans all 2^64 addresses, "
                                "more than an e820 entry can hold: the snapshot is corrupt")
        name = sysroot.read_text(f"{rel}/type").strip()
        kind = _FIRMWARE_KINDS.get(name.lower(), classify(name))
        regions.append(Region(span, kind, name, 0))
    return sorted(regions, key=lambda r: r.start) or None


def read_efi_runtime_map(sysroot: Sysroot) -> list[EfiRuntimeRegion]:
    """EFI runtime regions (empty on BIOS machines or kernels without CONFIG_EFI_RUNTIME_MAP)."""
    out: list[EfiRuntimeRegion] = []
    for entry in _numbered_entries(sysroot, EFI_RUNTIME_MAP) or []:
        rel = f"{EFI_RUNTIME_MAP}/{entry}"
        try:
            values = [int(sysroot.read_text(f"{rel}/{f}").strip(), 0)
                      for f in ("type", "phys_addr", "virt_addr", "num_pages", "attribute")]
        except ValueError:
            raise BadInputError(f"{sysroot.file(rel)}: malformed EFI runtime map entry") from None
        region = EfiRuntimeRegion(*values)
        if not all(0 <= v < ADDRESS_LIMIT for v in values) or region.range.end > ADDRESS_LIMIT:
            raise BadInputError(f"{sysroot.file(rel)}: its numbers are not 64-bit values or its "
                                f"{region.num_pages} pages run past 64-bit addresses")
        out.append(region)
    return out


def x86_memory_map(sysroot: Sysroot) -> MemoryMap:
    """Firmware regions refined by iomem's crash/kernel regions and reservations; iomem alone as fallback."""
    iomem = read_iomem(sysroot)
    firmware = read_firmware_memmap(sysroot)
    if firmware is None:
        return iomem
    fw_ram = merge(r.range for r in firmware if r.kind is RegionKind.RAM)
    nested: list[Region] = []
    for r in iomem.regions:
        if r.kind in _IOMEM_REFINEMENTS:
            nested.append(Region(r.range, r.kind, r.name, 1))
        elif r.kind in _RESERVING and any(r.range.overlaps(ram) for ram in fw_ram):
            # e.g. page 0, which the kernel reserves inside the firmware's first RAM entry
            nested.append(Region(r.range, r.kind, r.name, 1))
    regions = sorted(firmware + nested, key=lambda r: (r.start, r.depth))
    return MemoryMap(regions, f"{sysroot.file(FIRMWARE_MEMMAP)} + {sysroot.file('proc/iomem')}")


def iomem_regions(sysroot: Sysroot) -> list[Region]:
    """The running kernel's own view (what the crash e820 and the dump's RAM ranges come from)."""
    return read_iomem(sysroot).regions
