"""The memory map kexec plans against: classified physical regions.

A :class:`MemoryMap` is what the ``kexecfw_memory_map`` hook returns. Regions
may nest (``Kernel code`` inside ``System RAM``, ``Crash kernel`` inside
``System RAM``), as in /proc/iomem; the helper properties answer the questions
the planner and the elfcorehdr builder ask.
"""
from __future__ import annotations

import enum

from kexecfw.memory.ranges import Range, merge, subtract
from kexecfw.records import Record, TupleRecord, fresh


class RegionKind(str, enum.Enum):
    RAM = "System RAM"
    RESERVED = "reserved"
    ACPI = "ACPI Tables"
    NVS = "ACPI Non-volatile Storage"
    PMEM = "Persistent Memory"
    CRASH = "Crash kernel"
    CRASH_LOW = "Crash kernel (low)"
    KERNEL_CODE = "Kernel code"
    KERNEL_RODATA = "Kernel rodata"
    KERNEL_DATA = "Kernel data"
    KERNEL_BSS = "Kernel bss"
    OTHER = "other"


class Region(TupleRecord):
    """A tuple (range, kind, name, depth): a load makes one per line of proc/iomem."""

    __slots__ = ()
    range: Range
    kind: RegionKind
    name: str = ""          # the source's own label ("System RAM", "reserved", "PCI Bus 0000:00" ...)
    depth: int = 0          # nesting level in /proc/iomem (0 = top level)

    @property
    def start(self) -> int:
        return self.range.start

    @property
    def end(self) -> int:
        return self.range.end

    @property
    def size(self) -> int:
        return self.range.size


class MemoryMap(Record):
    """Physical memory as kexec sees it, plus where it came from."""

    regions: list[Region] = fresh(list)
    source: str = ""        # "proc/iomem", "sys/firmware/memmap", "device tree" ...

    def of_kind(self, *kinds: RegionKind) -> list[Region]:
        return [r for r in self.regions if r.kind in kinds]

    def ranges(self, *kinds: RegionKind) -> list[Range]:
        return merge(r.range for r in self.of_kind(*kinds))

    @property
    def system_ram(self) -> list[Range]:
        """All System RAM, crash regions included (they are RAM the first kernel set aside)."""
        return self.ranges(RegionKind.RAM)

    @property
    def usable_ram(self) -> list[Range]:
        """System RAM minus what firmware or the kernel reserved inside it (nested reserved/ACPI/NVS)."""
        return subtract(self.system_ram, self.ranges(RegionKind.RESERVED, RegionKind.ACPI,
                                                     RegionKind.NVS, RegionKind.PMEM))

    @property
    def crash_regions(self) -> list[Range]:
        """Crash kernel reservations, the main one first, then low ones."""
        main = self.ranges(RegionKind.CRASH)
        low = self.ranges(RegionKind.CRASH_LOW)
        return main + [r for r in low if r not in main]

    @property
    def main_crash_region(self) -> Range | None:
        """The region kexec_load requires crash segments and the entry in (the kernel's crashk_res)."""
        main = self.ranges(RegionKind.CRASH)
        return max(main, key=lambda r: r.size) if main else None

    @property
    def kernel_code(self) -> Range | None:
        code = self.ranges(RegionKind.KERNEL_CODE)
        return code[0] if code else None

    @property
    def crash_dump_ranges(self) -> list[Range]:
        """System RAM the capture kernel must be able to read: RAM minus the crash regions."""
        return subtract(self.system_ram, self.crash_regions)

    @property
    def ram_size(self) -> int:
        return sum(r.size for r in self.system_ram)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "regions": [
                {"start": f"{r.start:#x}", "end": f"{r.range.last:#x}", "size": f"{r.size:#x}",
                 "kind": r.kind.name.lower(), "name": r.name, "depth": r.depth}
                for r in self.regions
            ],
            "system_ram": [[f"{r.start:#x}", f"{r.last:#x}"] for r in self.system_ram],
            "crash_regions": [[f"{r.start:#x}", f"{r.last:#x}"] for r in self.crash_regions],
        }
