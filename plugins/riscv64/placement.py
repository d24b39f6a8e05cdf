"""Where the riscv64 kernel and DTB go (Documentation/arch/riscv/boot.rst, boot-image-header.rst).

* The Image goes ``text_offset`` bytes above a 2 MiB aligned base and needs ``image_size``
  bytes there (BSS included): a 64-bit kernel maps itself with 2 MiB pages and refuses a
  physical start that is not PMD aligned (arch/riscv/mm/init.c, setup_vm). The lowest fit
  is taken; for a panic load the planner only offers the crash region (kexecfw.flatimage.place_kernel,
  shared with arm64).
* The initrd goes above the kernel, from the next 2 MiB boundary on: the kernel reserves itself
  up to ``_end`` rounded up to PMD_SIZE (setup_bootmem, STRICT_KERNEL_RWX: its linear-map alias is
  mapped read-only in 2 MiB pages), and refuses an initrd that overlaps a reservation
  ("INITRD: ... overlaps in-use memory region - disabling initrd", seen in the lab).
* The DTB must be 8-byte aligned and at most 2 MiB: the kernel maps it through a fixmap of
  MAX_FDT_SIZE = PMD_SIZE (arch/riscv/include/asm/fixmap.h). It goes above the initrd
  (kexecfw.dtboot.place_dtb).
"""
from __future__ import annotations

from kexecfw import dtboot
from kexecfw.flatimage import KERNEL_ALIGN
from kexecfw.memory.ranges import align_up
from kexecfw.model import LoadContext
from kexecfw.segments.plan import Segment
from kexecfw.segments.planner import Planner


def kernel_reservation_end(planner: Planner) -> int:
    """Where the kernel's own memblock reservation ends: its segment's end rounded up to 2 MiB."""
    kernel = planner.get("kernel")
    return align_up(kernel.range.end, KERNEL_ALIGN) if kernel else 0


def place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment:
    low = kernel_reservation_end(planner)
    seg = planner.add("initrd", initrd, min_addr=low)
    ctx.note(f"initrd at {seg.mem:#x}, {len(initrd):#x} bytes, above the kernel's 2 MiB rounded "
             f"reservation (ends {low:#x})")
    return seg


def place_dtb(planner: Planner, dtb: bytes) -> Segment:
    low = max([kernel_reservation_end(planner)] + [s.range.end for s in planner.segments if s.name == "initrd"])
    return dtboot.place_dtb(planner, dtb, min_addr=low, limit="riscv kernels map at most 2 MiB of it")
