"""arm64 memory discovery: iomem, refined by what the running device tree reserves."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kexecfw.memory.model import RegionKind
from kexecfw.memory.ranges import Range
from kexecfw.model import LoadContext, LoadOptions
from kexecfw.pluginmanager import Hooks, new_plugin_manager
from kexecfw.plugins.arm64 import ARCH
from kexecfw.sysroot import Sysroot
from tests.conftest import oracle


def memory_map(root: Path):
    hooks = Hooks(new_plugin_manager(entry_points=False))
    ctx = LoadContext(arch=ARCH, sysroot=Sysroot(root), options=LoadOptions(kernel=Path("Image")), hooks=hooks)
    return hooks.memory_map(ctx), ctx


def test_fixture_map(arm64_sysroot: Path) -> None:
    memmap, ctx = memory_map(arm64_sysroot)
    assert memmap.system_ram == [Range(0x40000000, 0xC0000000)]
    assert memmap.main_crash_region == Range(0xA1A00000, 0xB9A00000)
    assert memmap.kernel_code == Range(0x40210000, 0x41860000)
    assert not any("device tree reserves" in line for line in ctx.log)     # QEMU's tree reserves nothing
    # kexec-tools' "System RAM ranges" for the same guest: RAM minus the nested reserved ranges
    assert memmap.usable_ram == [Range(0x40000000, 0x41860000), Range(0x41EB0000, 0x48000000),
                                 Range(0x4AF45000, 0x4B000000), Range(0x4B100000, 0xA1800000),
                                 Range(0xA1A00000, 0xB9A00000), Range(0xBFA00000, 0xBFA4C000),
                                 Range(0xBFBC9000, 0xBFBCB000)]


def test_device_tree_reservations_are_added(arm64_sysroot: Path, tmp_path: Path) -> None:
    dtc = oracle("dtc", "device-tree-compiler")
    root = tmp_path / "root"
    shutil.copytree(arm64_sysroot, root)
    fdt = root / "sys" / "firmware" / "fdt"
    fdt.chmod(0o644)
    dts = subprocess.run([dtc, "-q", "-I", "dtb", "-O", "dts", str(fdt)], capture_output=True, text=True,
                         check=True).stdout
    # A firmware region the running kernel kept out of iomem's "reserved", and one already there.
    dts = dts.replace("/dts-v1/;", "/dts-v1/;\n/memreserve/ 0x60000000 0x10000;\n/memreserve/ 0xa1800000 0x1000;", 1)
    fdt.write_bytes(subprocess.run([dtc, "-q", "-I", "dts", "-O", "dtb"], input=dts.encode(),
                                   capture_output=True, check=True).stdout)
    memmap, ctx = memory_map(root)
    extra = [r for r in memmap.regions if r.name == "reserved (device tree)"]
    assert [r.range for r in extra] == [Range(0x60000000, 0x60010000)]
    assert extra[0].kind is RegionKind.RESERVED
    assert not any(r.overlaps(Range(0x60000000, 0x60010000)) for r in memmap.usable_ram)
