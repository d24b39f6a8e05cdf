"""Where the arm64 kernel, initrd and DTB go (Documentation/arch/arm64/booting.rst).

* The Image sits ``text_offset`` bytes above a 2 MiB aligned base and needs
  ``image_size`` bytes there (BSS and early page tables included). With
  header flag bit 3 clear the base should be near the start of RAM, so we take
  the lowest fit; for a panic load the planner only offers the crash region
  (kexecfw.flatimage.place_kernel, shared with riscv64).
* The kernel and the initrd must lie in one 32 GiB aligned window (the early
  linear mapping covers that much around the kernel), as kexec-tools enforces.
* The DTB must be 8-byte aligned and at most 2 MiB (kexecfw.dtboot.place_dtb).

Segments follow kexec-tools' order: kernel, initrd right above it, DTB above the
initrd, purgatory above the DTB (the elfcorehdr is placed top-down by the core).
"""
from __future__ import annotations

from kexecfw import dtboot
from kexecfw.errors import NoSpaceError
from kexecfw.memory.ranges import align_down
from kexecfw.model import LoadContext
from kexecfw.segments.plan import Segment
from kexecfw.segments.planner import Planner

KERNEL_INITRD_WINDOW = 32 << 30


def kernel_window(kernel: Segment) -> tuple[int, int]:
    """The 32 GiB aligned window holding the kernel's base."""
    low = align_down(kernel.mem, KERNEL_INITRD_WINDOW)
    return low, low + KERNEL_INITRD_WINDOW


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


def place_dtb(planner: Planner, dtb: bytes) -> Segment:
    return dtboot.place_dtb(planner, dtb, min_addr=_above(planner, ("kernel", "initrd")),
                            limit="arm64 kernels accept at most 2 MiB")


def purgatory_min_addr(planner: Planner) -> int:
    return _above(planner, ("kernel", "initrd", "dtb"))
