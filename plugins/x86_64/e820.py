"""The e820 table the next kernel boots with: the firmware's for a normal load, a crash map for -p.

Crash map rules (the kernel's own kexec_file loader in Linux 6.1,
arch/x86/kernel/crash.c crash_setup_memmap_entries, and kexec-tools agree):
usable = System RAM below 1 MiB + the crash region(s) minus the elfcorehdr;
then the first kernel's ACPI tables, ACPI NVS, reserved and persistent-memory
ranges with their types, so the capture kernel finds ACPI and leaves devices
alone. All other RAM is absent: the capture kernel must not touch it.
"""
from __future__ import annotations

from kexecfw.memory.model import Region, RegionKind
from kexecfw.memory.ranges import Range, merge, subtract

from kexecfw.plugins.x86_64.bootparams import (E820_TYPE_ACPI, E820_TYPE_NVS, E820_TYPE_PMEM, E820_TYPE_PRAM,
                                               E820_TYPE_RAM, E820_TYPE_RESERVED, E820_TYPE_UNUSABLE, E820Entry)

LOW_1M = Range(0, 1 << 20)


def e820_type(region: Region) -> int | None:
    """The e820 type of a region, or None for regions that are not memory (PCI windows, ROMs ...)."""
    name = region.name.strip().lower()
    if name == "persistent memory (legacy)":
        return E820_TYPE_PRAM
    if name == "unusable memory":
        return E820_TYPE_UNUSABLE
    return {RegionKind.RAM: E820_TYPE_RAM, RegionKind.RESERVED: E820_TYPE_RESERVED, RegionKind.ACPI: E820_TYPE_ACPI,
            RegionKind.NVS: E820_TYPE_NVS, RegionKind.PMEM: E820_TYPE_PMEM}.get(region.kind)


def normal_e820(regions: list[Region]) -> list[E820Entry]:
    """The top-level memory regions as e820 entries, in address order (firmware map or iomem)."""
    out = []
    for r in sorted((r for r in regions if r.depth == 0), key=lambda r: r.start):
        t = e820_type(r)
        if t is not None and r.size:
            out.append(E820Entry(r.range, t))
    return out


def crash_e820(iomem: list[Region], crash_regions: list[Range], exclude: list[Range]) -> list[E820Entry]:
    """The capture kernel's map from the running kernel's iomem (see the module docstring)."""
    low_ram = [Range(r.start, min(r.end, LOW_1M.end)) for r in iomem
               if r.kind is RegionKind.RAM and r.depth == 0 and r.start < LOW_1M.end]
    usable = subtract(merge(low_ram + list(crash_regions)), exclude)
    entries = [E820Entry(r, E820_TYPE_RAM) for r in usable]
    by_type: dict[int, list[Range]] = {}
    for r in iomem:
        t = e820_type(r)
        if t is None or t == E820_TYPE_RAM:
            continue
        by_type.setdefault(t, []).append(r.range)
    taken = list(usable)
    for t in (E820_TYPE_ACPI, E820_TYPE_NVS, E820_TYPE_PMEM, E820_TYPE_PRAM, E820_TYPE_UNUSABLE, E820_TYPE_RESERVED):
        ranges = subtract(by_type.get(t, []), taken)
        entries.extend(E820Entry(r, t) for r in ranges)
        taken = merge(taken + ranges)
    return sorted(entries, key=lambda e: e.range.start)
