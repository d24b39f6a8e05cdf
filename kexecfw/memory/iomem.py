"""Parse /proc/iomem: a tree of ``start-end : name`` lines, two spaces per nesting level.

Non-root readers see every address as zero (kptr_restrict-like masking): that
is detected and reported, because a plan on zeros would be nonsense.
"""
from __future__ import annotations

import re

from kexecfw.errors import BadInputError
from kexecfw.memory.model import MemoryMap, Region, RegionKind
from kexecfw.memory.ranges import Range
from kexecfw.sysroot import Sysroot

_LINE = re.compile(r"^(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")

_KINDS = {
    "system ram": RegionKind.RAM,
    "crash kernel": RegionKind.CRASH,
    "kernel code": RegionKind.KERNEL_CODE,
    "kernel rodata": RegionKind.KERNEL_RODATA,
    "kernel data": RegionKind.KERNEL_DATA,
    "kernel bss": RegionKind.KERNEL_BSS,
    "reserved": RegionKind.RESERVED,
    "acpi tables": RegionKind.ACPI,
    "acpi non-volatile storage": RegionKind.NVS,
    "persistent memory": RegionKind.PMEM,
    "persistent memory (legacy)": RegionKind.PMEM,
}

_4G = 1 << 32


def classify(name: str) -> RegionKind:
    return _KINDS.get(name.strip().lower(), RegionKind.OTHER)


def parse_iomem(text: str, source: str = "proc/iomem") -> MemoryMap:
    """Parse /proc/iomem text into a :class:`MemoryMap` (regions in file order)."""
    regions: list[Region] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise BadInputError(f"{source}: line {lineno} is not 'start-end : name': {line.strip()[:60]!r}")
        span = Range.read(int(m["start"], 16), int(m["end"], 16), f"{source}: line {lineno}")
        name = m["name"].strip()
        regions.append(Region(span, classify(name), name, len(m["indent"]) // 2))
    if not regions:
        raise BadInputError(f"{source} is empty")
    if all(r.start == 0 and r.range.last == 0 for r in regions):
        raise BadInputError(f"{source} shows all addresses as 0: it was read without root; "
                            "run as root (or snapshot as root)")
    _mark_low_crash_region(regions)
    return MemoryMap(regions, source)


def _mark_low_crash_region(regions: list[Region]) -> None:
    """With ``crashkernel=X,high`` the kernel reserves two "Crash kernel" ranges; the one below
    4 GiB is crashk_low_res, the other is crashk_res (the one kexec_load checks against)."""
    crash = [i for i, r in enumerate(regions) if r.kind is RegionKind.CRASH]
    if len(crash) < 2:
        return
    high = [i for i in crash if regions[i].start >= _4G]
    if not high:
        return
    for i in crash:
        if i not in high:
            r = regions[i]
            regions[i] = Region(r.range, RegionKind.CRASH_LOW, r.name, r.depth)


def read_iomem(sysroot: Sysroot) -> MemoryMap:
    return parse_iomem(sysroot.read_text("proc/iomem"), sysroot.file("proc/iomem"))
