"""The riscv64 plugin's hook implementations; registered as the package kexecfw.plugins.riscv64 (see its __init__)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from kexecfw import hookimpl
from kexecfw.model import ArchSpec, ElfcoreInfo, KernelFile, KernelImage, KernelTextLoad, LoadContext
from kexecfw.plugins.riscv64.capture import EM_RISCV

if TYPE_CHECKING:
    from kexecfw.segments.plan import Segment
    from kexecfw.segments.planner import Planner

ARCH = ArchSpec(
    name="riscv64",
    aliases=("riscv",),
    elf_machine=EM_RISCV,               # KEXEC_ARCH_RISCV = 243 << 16 (include/uapi/linux/kexec.h)
    page_size=4096,
    # include/uapi/asm-generic/unistd.h
    nr_kexec_load=104,
    nr_kexec_file_load=294,             # Debian's riscv64 kernels have no KEXEC_FILE: not the default
    nr_reboot=142,
    uname_machines=("riscv64",),
)
VMCOREINFO_ARTIFACT = "riscv64_address_space"



@hookimpl
def kexecfw_architectures() -> list[ArchSpec]:
    return [ARCH]


@hookimpl
def kexecfw_probe_kernel(ctx: LoadContext, kernel_file: KernelFile) -> KernelImage | None:
    from kexecfw.plugins.riscv64.image import check_loadable, unwrap
    what = str(kernel_file.path)
    probed = unwrap(kernel_file.data, what)
    if probed is None:
        return None
    check_loadable(probed.header, what)
    h = probed.header
    details = {"text_offset": h.text_offset, "image_size": h.image_size, "flags": h.flags,
               "version": h.version_text, "efi_stub": h.efi_stub, "file_size": len(kernel_file.data)}
    return KernelImage(arch=ARCH.name, format=probed.format, payload=probed.payload, details=details)


@hookimpl
def kexecfw_place_kernel(ctx: LoadContext, planner: Planner) -> int | None:
    from kexecfw.flatimage import place_kernel
    return place_kernel(ctx, planner)


@hookimpl
def kexecfw_place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment | None:
    from kexecfw.plugins.riscv64 import placement
    return placement.place_initrd(ctx, planner, initrd)


@hookimpl
def kexecfw_elfcore_info(ctx: LoadContext) -> ElfcoreInfo | None:
    from kexecfw.dtboot import source_device_tree
    from kexecfw.memory.iomem import read_iomem
    from kexecfw.plugins.riscv64.vmcore_facts import address_space, dump_ranges, firmware_ranges
    from kexecfw.running import read_vmcoreinfo
    memmap = ctx.memmap if ctx.memmap is not None else read_iomem(ctx.sysroot)
    space = address_space(ctx.sysroot, memmap, read_vmcoreinfo(ctx.sysroot))
    ctx.artifacts[VMCOREINFO_ARTIFACT] = space
    tree = source_device_tree(ctx, keep=True)          # kexecfw_boot_params edits this parse
    firmware = firmware_ranges(tree)
    ram = dump_ranges(memmap, space, firmware)
    ctx.note(f"kernel image {space.image.start:#x}-{space.image.last:#x} at virtual {space.text_vaddr:#x} "
             f"(va_kernel_pa_offset {space.va_kernel_pa_offset:#x}); Sv{space.va_bits}, PAGE_OFFSET "
             f"{space.page_offset:#x} at phys_ram_base {space.phys_ram_base:#x}; dumped RAM (System RAM "
             f"with its Reserved ranges, minus the crash region and M-mode firmware "
             f"{', '.join(str(r) for r in firmware) or '(none)'}): " + ", ".join(str(r) for r in ram))
    return ElfcoreInfo(machine=EM_RISCV,
                       kernel_text=KernelTextLoad(space.text_vaddr, space.image.start, space.image.size),
                       page_offset=space.page_offset, phys_offset=space.phys_ram_base, ram_ranges=ram)


@hookimpl
def kexecfw_boot_params(ctx: LoadContext, planner: Planner, kernel_entry: int) -> bool | None:
    """The DTB: sys/firmware/fdt (or --dtb) with /chosen rewritten, as on arm64. riscv's kexec_load
    finds it by its FDT magic among the segments and passes its address in a1 (machine_kexec.c)."""
    from kexecfw.dtboot import add_dtb
    from kexecfw.plugins.riscv64 import placement
    add_dtb(ctx, planner, lambda blob: placement.place_dtb(planner, blob),
            how_found=" (the kernel finds it by its magic and enters the next kernel with a0 = hart id, "
                      "a1 = its address)")
    return True

