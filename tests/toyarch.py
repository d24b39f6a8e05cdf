"""A toy third-party architecture plugin, registered from tests only (never installed).

It serves "toy64": an image is b"TOYKERNL" + payload, loaded 2 MiB-aligned; the
boot parameters are the command line in a "bootinfo" segment; no purgatory.
"""
from __future__ import annotations

from kexecfw import hookimpl
from kexecfw.model import ArchSpec, ElfcoreInfo, KernelImage

MAGIC = b"TOYKERNL"
ARCH = ArchSpec(name="toy64", aliases=("toy",), elf_machine=0x7777, nr_kexec_load=-1)
calls: list[str] = []


@hookimpl
def kexecfw_architectures():
    return [ARCH]


@hookimpl
def kexecfw_probe_kernel(ctx, kernel_file):
    if not kernel_file.data.startswith(MAGIC):
        return None
    calls.append("probe")
    return KernelImage("toy64", "toy image", kernel_file.data[len(MAGIC):], {"size": len(kernel_file.data)})


@hookimpl
def kexecfw_place_kernel(ctx, planner):
    calls.append("place_kernel")
    return planner.add("kernel", ctx.kernel.payload, align=2 << 20).mem


@hookimpl
def kexecfw_elfcore_info(ctx):
    calls.append("elfcore_info")
    return ElfcoreInfo(machine=ARCH.elf_machine, kernel_text=None, page_offset=0xFFFF800000000000)


@hookimpl
def kexecfw_boot_params(ctx, planner, kernel_entry):
    calls.append("boot_params")
    hdr = planner.get("elfcorehdr")
    cmdline = ctx.cmdline + (f" elfcorehdr={hdr.mem:#x}" if hdr else "")
    ctx.cmdline = cmdline.strip()
    planner.add("bootinfo", ctx.cmdline.encode() + b"\0")
    return True
