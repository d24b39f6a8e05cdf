"""The next kernel's device tree: the running one's (or ``--dtb``) with a rewritten /chosen.

What the kernel reads from /chosen at boot (drivers/of/fdt.c, Documentation/devicetree/bindings/chosen.txt):
``bootargs``; ``linux,initrd-start``/``linux,initrd-end`` (end is exclusive:
start + size, not page-rounded); ``kaslr-seed`` and ``rng-seed`` (the first
kernel zeroes or deletes them after use, so they are refreshed here); for a
crash kernel ``linux,elfcorehdr`` = <address size> of the ELF core header and
``linux,usable-memory-range`` = the crash region(s) it may use as RAM. Values
are written with the root node's #address-cells/#size-cells, as kexec-tools
does. Properties a previous kexec left in the tree are removed, as the
kernel's own kexec_file_load does (drivers/of/kexec.c).
"""
from __future__ import annotations

import os
from typing import Callable

from kexecfw.errors import BadInputError
from kexecfw.memory.devicetree import DeviceTree, encode_cells
from kexecfw.memory.ranges import Range
from kexecfw.model import LoadContext
from kexecfw.segments.planner import Planner

CHOSEN = "/chosen"
FIRMWARE_DTB = "sys/firmware/fdt"
# ctx.artifacts key: the firmware tree kexecfw_memory_map parsed (one parse costs >0.1 s in a TCG guest)
PARSED_FIRMWARE_DTB = "arm64.firmware_dtb_parsed"
# Left by a previous kexec or the first kernel's boot; meaningless for the next kernel.
STALE_PROPERTIES = ("linux,elfcorehdr", "linux,usable-memory-range", "linux,ima-kexec-buffer",
                    "linux,initrd-start", "linux,initrd-end")
KASLR_SEED_BYTES = 8


def source_device_tree(ctx: LoadContext) -> DeviceTree:
    """``--dtb``, else the tree the running kernel booted with (sys/firmware/fdt; kexecfw_memory_map's parse)."""
    if ctx.options.dtb is not None:
        return DeviceTree.from_file(ctx.options.dtb)
    parsed = ctx.artifacts.pop(PARSED_FIRMWARE_DTB, None)   # popped: the caller edits it
    if parsed is not None:
        return parsed
    if not ctx.sysroot.exists(FIRMWARE_DTB):
        raise BadInputError(f"{ctx.sysroot.path(FIRMWARE_DTB)} does not exist (booted with ACPI only, or "
                            "not root?); pass the device tree with --dtb")
    return DeviceTree.from_bytes(ctx.sysroot.read_bytes(FIRMWARE_DTB), str(ctx.sysroot.path(FIRMWARE_DTB)))


def _drop_old_initrd_reservation(tree: DeviceTree) -> None:
    """Boot loaders reserve the first kernel's initrd with a /memreserve/ entry; it is stale now."""
    start = tree.get(CHOSEN, "linux,initrd-start")
    end = tree.get(CHOSEN, "linux,initrd-end")
    if start is None or end is None:
        return
    lo, hi = int.from_bytes(start, "big"), int.from_bytes(end, "big")
    page = 4096
    old = Range(lo // page * page, -(-hi // page) * page) if hi > lo else None
    if old is not None:
        tree.memreserve = [r for r in tree.memreserve if r != old and r != Range(lo, hi)]


def update_chosen(tree: DeviceTree, *, cmdline: str, initrd: Range | None, elfcorehdr: Range | None,
                  usable: list[Range] | None, random_bytes: Callable[[int], bytes] = os.urandom) -> list[str]:
    """Rewrite /chosen for the next kernel; returns what changed, in words."""
    changes: list[str] = []
    addr_cells, _ = tree.root_cells
    _drop_old_initrd_reservation(tree)
    removed = [name for name in STALE_PROPERTIES if tree.remove(CHOSEN, name)]
    if cmdline:
        tree.set_string(CHOSEN, "bootargs", cmdline)
        changes.append(f"bootargs={cmdline!r}")
    elif tree.remove(CHOSEN, "bootargs"):
        changes.append("removed bootargs (empty command line: the kernel's built-in one applies)")
    if initrd is not None:
        tree.set(CHOSEN, "linux,initrd-start", encode_cells([initrd.start], addr_cells))
        tree.set(CHOSEN, "linux,initrd-end", encode_cells([initrd.end], addr_cells))
        changes.append(f"linux,initrd-start={initrd.start:#x} linux,initrd-end={initrd.end:#x}")
    for name, size in (("kaslr-seed", KASLR_SEED_BYTES), ("rng-seed", None)):
        old = tree.get(CHOSEN, name)
        if old is not None:
            tree.set(CHOSEN, name, random_bytes(size or len(old)))
            changes.append(f"refreshed {name} ({size or len(old)} random bytes)")
    if elfcorehdr is not None:
        tree.set_ranges(CHOSEN, "linux,elfcorehdr", [elfcorehdr])
        changes.append(f"linux,elfcorehdr=<{elfcorehdr.start:#x} {elfcorehdr.size:#x}>")
    if usable:
        tree.set_ranges(CHOSEN, "linux,usable-memory-range", usable)
        changes.append("linux,usable-memory-range=" + " ".join(f"<{r.start:#x} {r.size:#x}>" for r in usable))
    # Report a removal only when the property did not come back with a new value.
    return [f"removed {name}" for name in removed if tree.get(CHOSEN, name) is None] + changes


def boot_params(ctx: LoadContext, planner: Planner) -> DeviceTree:
    """Build the DTB for this load (not yet placed)."""
    tree = source_device_tree(ctx)
    ctx.artifacts["dtb_before"] = tree.to_bytes()
    initrd_seg = planner.get("initrd")
    initrd = Range(initrd_seg.mem, initrd_seg.mem + initrd_seg.bufsz) if initrd_seg else None
    elfcorehdr = usable = None
    if ctx.panic:
        hdr = planner.get("elfcorehdr")
        if hdr is None:
            raise BadInputError("a panic load needs the elfcorehdr segment before the DTB is built")
        assert ctx.memmap is not None
        elfcorehdr = Range(hdr.mem, hdr.mem + hdr.bufsz)
        usable = ctx.memmap.crash_regions
    changes = update_chosen(tree, cmdline=ctx.cmdline, initrd=initrd, elfcorehdr=elfcorehdr, usable=usable)
    for change in changes:
        ctx.note(f"dtb /chosen: {change}")
    return tree
