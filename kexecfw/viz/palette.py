"""One colour per kind of thing, the same in every view and for every architecture.

A memory region's colour comes from its kind (System RAM, reserved, crash region, the running
kernel's code/rodata/data/bss), a planned segment's from its name (kernel, initrd, dtb, ...), an
elfcorehdr entry's from what it describes; the legend names the kind, so a picture of arm64 and one of
x86_64 read the same. Kinds that sit side by side (the kernel's four parts) get different hues, not
four shades of one.
"""
from __future__ import annotations

from kexecfw.memory.model import RegionKind

# memory regions (/proc/iomem, /sys/firmware/memmap, the device tree)
REGION_COLOURS = {
    RegionKind.RAM: "#c6dbef", RegionKind.RESERVED: "#bdbdbd", RegionKind.ACPI: "#fdd0a2",
    RegionKind.NVS: "#fdae6b", RegionKind.PMEM: "#c7e9c0", RegionKind.CRASH: "#de2d26",
    RegionKind.CRASH_LOW: "#fc9272", RegionKind.OTHER: "#f0f0f0",
    # the running kernel's image: four hues, told apart without reading the labels
    RegionKind.KERNEL_CODE: "#08306b", RegionKind.KERNEL_RODATA: "#41b6c4", RegionKind.KERNEL_DATA: "#756bb1",
    RegionKind.KERNEL_BSS: "#dadaeb",
}
# legend names of the region kinds
REGION_NAMES = {
    RegionKind.RAM: "System RAM", RegionKind.RESERVED: "reserved", RegionKind.ACPI: "ACPI tables",
    RegionKind.NVS: "ACPI NVS", RegionKind.PMEM: "persistent memory", RegionKind.CRASH: "crash region",
    RegionKind.CRASH_LOW: "crash region (low)", RegionKind.OTHER: "device",
    RegionKind.KERNEL_CODE: "kernel code", RegionKind.KERNEL_RODATA: "kernel rodata",
    RegionKind.KERNEL_DATA: "kernel data", RegionKind.KERNEL_BSS: "kernel bss",
}
# short labels written in (or beside) the kernel's boxes
KERNEL_PART_LABELS = {RegionKind.KERNEL_CODE: "code", RegionKind.KERNEL_RODATA: "rodata",
                      RegionKind.KERNEL_DATA: "data", RegionKind.KERNEL_BSS: "bss"}

# planned kexec segments, by the name the planner gives them
SEGMENT_COLOURS = {
    "kernel": "#31a354", "initrd": "#fd8d3c", "dtb": "#8c6d31", "boot_params": "#bcbd22",
    "purgatory": "#636363", "elfcorehdr": "#e7298a",
}
OTHER_SEGMENT = "#9c9ede"

# the elfcorehdr's program headers: what the capture kernel will read
ELFCORE_COLOURS = {
    "PT_LOAD (RAM)": "#66c2a4",
    "PT_LOAD (kernel text)": REGION_COLOURS[RegionKind.KERNEL_CODE],   # it is the kernel's code
    "VMCOREINFO": "#e6ab02",
    "CPU crash note": "#a6d854",
}

TEXT_ON_DARK = {REGION_COLOURS[RegionKind.KERNEL_CODE], REGION_COLOURS[RegionKind.KERNEL_DATA],
                REGION_COLOURS[RegionKind.CRASH], SEGMENT_COLOURS["purgatory"], SEGMENT_COLOURS["kernel"]}


def region_colour(kind: RegionKind) -> str:
    return REGION_COLOURS[kind]


def segment_colour(name: str) -> str:
    return SEGMENT_COLOURS.get(name, OTHER_SEGMENT)


def text_colour(fill: str) -> str:
    """Black on light fills, white on the dark ones."""
    return "white" if fill in TEXT_ON_DARK else "black"


def legend_rank(name: str) -> int:
    """Where ``name`` comes in a legend: regions, then segments, then the elfcorehdr's entries, as listed here."""
    order = ([REGION_NAMES[k] for k in REGION_COLOURS] + [f"segment: {n}" for n in SEGMENT_COLOURS]
             + list(ELFCORE_COLOURS))
    return order.index(name) if name in order else len(order)
