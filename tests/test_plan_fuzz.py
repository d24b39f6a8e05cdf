"""Whole plans from the real arm64 plugin, on fuzzed memory maps, always pass the kernel's rules.

The sysroot is the real arm64 guest's (device tree, kcore notes, crash notes) with a generated
/proc/iomem: RAM banks and a crash region that hypothesis moves and resizes. The kernel is a
synthetic arm64 Image (a valid header over filler): its size, not its code, matters to the planner.
"""
from __future__ import annotations

import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kexecfw.errors import NoSpaceError
from kexecfw.load import plan_load
from kexecfw.model import LoadOptions
from kexecfw.pluginmanager import Hooks, new_plugin_manager
from kexecfw.sysroot import Sysroot
from tests.conftest import fixture_path

MIB = 1 << 20
ARM64_IMAGE_HEADER = struct.Struct("<IIQQQQQQII")  # arch/arm64/include/asm/image.h
HOOKS = Hooks(new_plugin_manager(entry_points=False))


def arm64_image(image_size: int) -> bytes:
    flags = 1 << 1 | 1 << 3   # 4K pages, placement anywhere
    header = ARM64_IMAGE_HEADER.pack(0, 0, 0, image_size, flags, 0, 0, 0, 0x644D5241, 0)
    return header + bytes(image_size // 2 - len(header))


layouts = st.tuples(
    st.integers(2, 16).map(lambda g: g << 30),          # RAM size (the guest's kcore notes say >= 2 GiB)
    st.integers(64, 1024).map(lambda m: m * MIB),        # crash region size
    st.integers(0, 100),                                 # crash region position, % of the RAM
    st.integers(1, 40).map(lambda m: m * MIB),           # initrd size
    st.booleans(),                                       # panic or normal
)


@pytest.fixture(scope="module")
def base_sysroot(tmp_path_factory):
    src = fixture_path("arm64", "sysroot")
    dst = tmp_path_factory.mktemp("fuzz") / "sysroot"
    shutil.copytree(src, dst)
    return dst


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layouts)
def test_arm64_plans_pass_or_fail_cleanly(base_sysroot, tmp_path_factory, layout):
    ram, crash_size, where, initrd_size, panic = layout
    crash_size = min(crash_size, ram // 2) // (2 * MIB) * (2 * MIB)
    base = 0x40000000
    low = 0x42000000 - base  # above the running kernel's code
    crash_start = base + low + ((ram - low - crash_size) * where // 100) // (2 * MIB) * (2 * MIB)
    (base_sysroot / "proc/iomem").write_text(
        f"{base:08x}-{base + ram - 1:08x} : System RAM\n"
        f"  40210000-4185ffff : Kernel code\n"
        f"  {crash_start:08x}-{crash_start + crash_size - 1:08x} : Crash kernel\n")
    work = tmp_path_factory.mktemp("files")
    kernel, initrd = work / "Image", work / "initrd"
    kernel.write_bytes(arm64_image(32 * MIB))
    initrd.write_bytes(bytes(initrd_size))
    try:
        plan, _ = plan_load(LoadOptions(kernel=kernel, initrd=initrd, cmdline="console=ttyAMA0", panic=panic),
                            Sysroot(base_sysroot), arch="arm64", hooks=HOOKS)
    except NoSpaceError as e:
        assert panic and "\n" not in e.message and "MiB" in e.message
        return
    # plan_load validated it against the kernel's rules; check the arch rules on top
    kernel_seg, initrd_seg = plan.segment("kernel"), plan.segment("initrd")
    assert kernel_seg.mem % (2 * MIB) == 0
    assert initrd_seg.mem + initrd_seg.memsz - kernel_seg.mem <= 32 << 30
    if panic:
        assert {s.name for s in plan.segments} == {"kernel", "initrd", "elfcorehdr", "dtb", "purgatory"}
