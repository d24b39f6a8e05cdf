"""Where the arm64 kernel, initrd and DTB go (Documentation/arch/arm64/booting.rst).

* The Image sits ``text_offset`` bytes above a 2 MiB aligned base and needs
  ``image_size`` bytes there (BSS and early page tables included). With
  header flag bit 3 clear the base should be near the start of RAM, so we take
  the lowest fit; for a panic load the planner only offers the crash region.
* The kernel and the initrd must lie in one 32 GiB aligned window (the early
  linear mapping covers that much around the kernel), as kexec-tools enforces.
* The DTB must be 8-byte aligned and at most 2 MiB.

Segments follow kexec-tools' order: kernel, initrd right above it, DTB above the
initrd, purgatory above the DTB (the elfcorehdr is placed top-down by the core).
"""
from __future__ import annotations

from kexecfw.errors import NoSpaceError
from kexecfw.memory.holes import find_hole
from kexecfw.memory.ranges import align_down
from kexecfw.model import LoadContext
from kexecfw.segments.plan import Segment
from kexecfw.segments.planner import Planner

KERNEL_ALIGN = 2 << 20
KERNEL_INITRD_WINDOW = 32 << 30
MAX_DTB_SIZE = 2 << 20


def kernel_window(kernel: Segment) -> tuple[int, int]:
    """The 32 GiB aligned window holding the kernel's base."""
    low = align_down(kernel.mem, KERNEL_INITRD_WINDOW)
    return low, low + KERNEL_INITRD_WINDOW


def place_kernel(ctx: LoadContext, planner: Planner) -> int:
    assert ctx.kernel is not None
    text_offset = ctx.kernel.details["text_offset"]
    image_size = ctx.kernel.details["image_size"]
    payload = ctx.kernel.payload
    memsz = max(image_size, len(payload))
    base = find_hole(planner.free, text_offset + memsz, align=KERNEL_ALIGN)
    if base is None:
        raise NoSpaceError(f"no 2 MiB aligned {(text_offset + memsz) / (1 << 20):.1f} MiB hole for the kernel "
                           f"in {planner.what}; reserve more memory (e.g. a larger crashkernel=)")
    seg = planner.add_at("kernel", payload, base + text_offset, memsz=memsz)
    ctx.note(f"kernel at {seg.mem:#x} (2 MiB aligned base {base:#x} + text_offset {text_offset:#x}), "
             f"image_size {image_size:#x}")
    return seg.mem


def _above(planner: Planner, names: tuple[str, ...]) -> int:
    """End of the highest of the named segments already placed (0 if none)."""
    ends = [s.range.end for s in planner.segments if s.name in names]
    return max(ends, default=0)


def place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment:
    kernel = planner.get("kernel")
    if kernel is None:
        return planner.add("initrd", initrd)
    low, high = kernel_window(kernel)
    try:
        seg = planner.add("initrd", initrd, min_addr=kernel.range.end, max_addr=high)
    except NoSpaceError:
        # Below the kernel is allowed too, as long as both stay in the window.
        seg = planner.add("initrd", initrd, min_addr=low, max_addr=high)
    ctx.note(f"initrd at {seg.mem:#x}, {len(initrd):#x} bytes, in the kernel's 32 GiB window {low:#x}-{high - 1:#x}")
    return seg


def place_dtb(ctx: LoadContext, planner: Planner, dtb: bytes) -> Segment:
    if len(dtb) > MAX_DTB_SIZE:
        raise NoSpaceError(f"the device tree is {len(dtb) >> 10} KiB; arm64 kernels accept at most 2 MiB: "
                           "pass a smaller --dtb")
    low = _above(planner, ("kernel", "initrd"))
    try:
        return planner.add("dtb", dtb, min_addr=low)
    except NoSpaceError:
        return planner.add("dtb", dtb)


def purgatory_min_addr(planner: Planner) -> int:
    return _above(planner, ("kernel", "initrd", "dtb"))
