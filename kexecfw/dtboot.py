"""Device-tree boot, shared by every architecture whose next kernel gets a DTB (arm64, riscv64).

What the kernel reads from /chosen at boot (drivers/of/fdt.c, Documentation/devicetree/bindings/chosen.txt),
the same on each of them: ``bootargs``; ``linux,initrd-start``/``linux,initrd-end`` (end is
exclusive: start + size, not page-rounded); ``kaslr-seed`` and ``rng-seed`` (the first kernel
zeroes or deletes them after use, so they are refreshed here); for a crash kernel
``linux,elfcorehdr`` = <address size> of the ELF core header and ``linux,usable-memory-range`` =
the crash region(s) it may use as RAM. Values are written with the root node's
#address-cells/#size-cells, as kexec-tools does. Properties a previous kexec left in the tree
are removed, as the kernel's own kexec_file_load does (drivers/of/kexec.c).

The tree starts as ``--dtb`` or the one the running kernel booted with (sys/firmware/fdt), parsed
once per load: a parse costs more than 0.1 s in a TCG guest, so whichever hook reads it first
keeps it in ``ctx.artifacts`` for :func:`build_dtb`. Where the DTB goes is the plugin's call
(the lowest address it may start at, how large the kernel takes it: :func:`place_dtb`); the
rest is here, and :func:`add_dtb` is the whole kexecfw_boot_params hook but for that.
"""
from __future__ import annotations

import os
from typing import Callable

from kexecfw.errors import BadInputError, NoSpaceError
from kexecfw.memory.devicetree import DeviceTree, encode_cells
from kexecfw.memory.model import MemoryMap
from kexecfw.memory.ranges import Range
from kexecfw.model import LoadContext
from kexecfw.segments.plan import Segment
from kexecfw.segments.planner import Planner

CHOSEN = "/chosen"
FIRMWARE_DTB = "sys/firmware/fdt"
# ctx.artifacts key: the source tree a hook already parsed, for build_dtb to edit
PARSED_SOURCE_TREE = "dtboot.source_tree"
# Left by a previous kexec or the first kernel's boot; meaningless for the next kernel.
STALE_PROPERTIES = ("linux,elfcorehdr", "linux,usable-memory-range", "linux,ima-kexec-buffer",
                    "linux,initrd-start", "linux,initrd-end")
KASLR_SEED_BYTES = 8
DTB_ALIGN = 8                   # the FDT header's own alignment (Documentation/arch/*/booting.rst)


def _parse_firmware_tree(ctx: LoadContext) -> DeviceTree:
    return DeviceTree.from_bytes(ctx.sysroot.read_bytes(FIRMWARE_DTB), ctx.sysroot.file(FIRMWARE_DTB))


def source_device_tree(ctx: LoadContext, *, keep: bool = False) -> DeviceTree:
    """``--dtb``, else the tree the running kernel booted with (sys/firmware/fdt, parsed once per load).

    ``keep``: the caller only reads the tree; leave it for :func:`build_dtb`, which edits it."""
    if ctx.options.dtb is not None:
        tree = DeviceTree.from_file(ctx.options.dtb)
    else:
        parsed = ctx.artifacts.pop(PARSED_SOURCE_TREE, None)   # popped: the caller may edit it
        if parsed is not None:
            tree = parsed
        elif not ctx.sysroot.exists(FIRMWARE_DTB):
            raise BadInputError(f"{ctx.sysroot.file(FIRMWARE_DTB)} does not exist (booted with ACPI only, "
                                "or not root?); pass the device tree with --dtb")
        else:
            tree = _parse_firmware_tree(ctx)
    if keep:
        ctx.artifacts[PARSED_SOURCE_TREE] = tree
    return tree


def add_firmware_reservations(ctx: LoadContext, memmap: MemoryMap) -> MemoryMap:
    """``memmap`` plus what the running device tree reserves (/memreserve/, no-reuse /reserved-memory)
    and iomem does not already mark: the next kernel honours those reservations too."""
    from kexecfw.memory.model import Region, RegionKind
    from kexecfw.memory.ranges import subtract
    if not ctx.sysroot.exists(FIRMWARE_DTB):
        return memmap
    try:
        tree = _parse_firmware_tree(ctx)
    except BadInputError as e:
        ctx.note(f"device tree reservations not checked: {e}")
        return memmap
    ctx.artifacts[PARSED_SOURCE_TREE] = tree     # build_dtb edits this parse rather than redo it
    known = memmap.ranges(RegionKind.RESERVED, RegionKind.ACPI, RegionKind.NVS, RegionKind.PMEM)
    extra = subtract(tree.reserved_ranges(include_reusable=False), known)
    for r in extra:
        memmap.regions.append(Region(r, RegionKind.RESERVED, "reserved (device tree)", 1))
    if extra:
        ctx.note(f"device tree reserves {len(extra)} range(s) iomem does not show: "
                 + ", ".join(str(r) for r in extra))
    return memmap


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


def build_dtb(ctx: LoadContext, planner: Planner) -> DeviceTree:
    """The next kernel's tree for this load, /chosen rewritten for the segments placed so far."""
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


MAX_DTB_SIZE = 2 << 20          # arm64 (booting.rst) and riscv (MAX_FDT_SIZE = PMD_SIZE, fixmap.h)


def place_dtb(planner: Planner, blob: bytes, *, min_addr: int, limit: str, max_size: int = MAX_DTB_SIZE) -> Segment:
    """Add ``blob`` as the "dtb" segment: at ``min_addr`` or above if there is room, else anywhere the
    planner allows. ``max_size`` is what the kernel takes, ``limit`` says so in words ("arm64 kernels
    accept at most 2 MiB")."""
    if len(blob) > max_size:
        raise NoSpaceError(f"the device tree is {len(blob) >> 10} KiB; {limit}: pass a smaller --dtb")
    try:
        return planner.add("dtb", blob, min_addr=min_addr, align=DTB_ALIGN)
    except NoSpaceError:
        return planner.add("dtb", blob, align=DTB_ALIGN)


def add_dtb(ctx: LoadContext, planner: Planner, place: Callable[[bytes], Segment], how_found: str = "") -> Segment:
    """The kexecfw_boot_params of a device-tree architecture: build the DTB, have the plugin's ``place``
    put it (with :func:`place_dtb`), keep it in ``ctx.artifacts["dtb"]``. ``how_found`` adds to the
    plan's note how the next kernel finds it."""
    blob = build_dtb(ctx, planner).to_bytes()
    seg = place(blob)
    ctx.artifacts["dtb"] = blob
    ctx.note(f"dtb at {seg.mem:#x}, {len(blob):#x} bytes{how_found}")
    return seg
