"""Placement rules of arm64 segments on memory maps made here: 2 MiB + text_offset, the 32 GiB window."""
from __future__ import annotations

from pathlib import Path

import pytest

from kexecfw.errors import NoSpaceError
from kexecfw.memory.ranges import Range
from kexecfw.model import KernelImage, LoadContext, LoadOptions
from kexecfw.plugins.arm64 import ARCH
from kexecfw.flatimage import place_kernel
from kexecfw.plugins.arm64.placement import place_dtb, place_initrd
from kexecfw.segments.planner import Planner
from kexecfw.sysroot import Sysroot

MIB = 1 << 20
GIB = 1 << 30


def context(tmp_path: Path, text_offset: int = 0, image_size: int = 0x2010000) -> LoadContext:
    kernel = KernelImage("arm64", "arm64 Image", bytes(image_size - 0x100000),
                         {"text_offset": text_offset, "image_size": image_size})
    return LoadContext(arch=ARCH, sysroot=Sysroot(tmp_path), options=LoadOptions(kernel=Path("Image")),
                       kernel=kernel)


def test_text_offset_of_old_kernels(tmp_path: Path) -> None:
    """Before 5.8 the Image sat TEXT_OFFSET = 0x80000 above the 2 MiB aligned base."""
    planner = Planner([Range(0x40000000 + 0x1000, 0x80000000)])
    entry = place_kernel(context(tmp_path, text_offset=0x80000), planner)
    assert entry == 0x40200000 + 0x80000
    kernel = planner.get("kernel")
    assert (kernel.mem, kernel.memsz) == (entry, 0x2010000)


def test_initrd_stays_in_the_kernels_32_gib_window(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    low = Range(32 * GIB - 64 * MIB, 32 * GIB)          # below a 32 GiB boundary
    high = Range(32 * GIB, 40 * GIB)                     # plenty above it, but in the next window
    planner = Planner([low, high])
    place_kernel(ctx, planner)
    assert planner.get("kernel").mem == low.start
    with pytest.raises(NoSpaceError):
        place_initrd(ctx, planner, bytes(40 * MIB))      # fits only above 32 GiB: refused
    initrd = place_initrd(ctx, planner, bytes(16 * MIB))
    assert planner.get("kernel").range.end <= initrd.mem and initrd.range.end <= 32 * GIB


def test_initrd_below_the_kernel_when_nothing_is_free_above(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    planner = Planner([Range(0x40000000, 0x48000000)])
    planner.add_at("firmware", bytes(MIB), 0x40000000)      # the kernel then starts at 0x40200000
    place_kernel(ctx, planner)
    end = planner.get("kernel").range.end
    planner.add_at("other", bytes(0x48000000 - end), end)   # nothing free above the kernel
    initrd = place_initrd(ctx, planner, bytes(MIB // 2))
    assert initrd.mem == 0x40100000


def test_dtb_above_the_initrd_and_at_most_2_mib(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    planner = Planner([Range(0x40000000, 0x80000000)])
    place_kernel(ctx, planner)
    initrd = place_initrd(ctx, planner, bytes(3 * MIB + 5))
    dtb = place_dtb(planner, bytes(0x2025))
    assert dtb.mem == initrd.range.end and dtb.memsz == 0x3000
    with pytest.raises(NoSpaceError, match="at most 2 MiB"):
        place_dtb(planner, bytes(2 * MIB + 1))
