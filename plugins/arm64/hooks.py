"""The arm64 plugin's hook implementations; registered as the package kexecfw.plugins.arm64 (see its __init__)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kexecfw import hookimpl
from kexecfw.plugins.arm64.capture import EM_AARCH64
from kexecfw.errors import BadInputError
from kexecfw.model import ArchSpec, ElfcoreInfo, KernelFile, KernelImage, KernelTextLoad, LoadContext, PurgatoryObject

if TYPE_CHECKING:
    from kexecfw.memory.model import MemoryMap
    from kexecfw.model import RelocationApplier
    from kexecfw.segments.plan import Segment
    from kexecfw.segments.planner import Planner

# The modules that do the work (and fdt, through the device tree) are imported inside the hooks,
# after the architecture check: every load registers this plugin, an x86_64 load need not pay
# for importing them.

PURGATORY_FILE = os.path.join(os.path.dirname(__file__), "purgatory", "purgatory.ro")

ARCH = ArchSpec(
    name="arm64",
    aliases=("aarch64",),
    elf_machine=EM_AARCH64,
    page_size=4096,
    # include/uapi/asm-generic/unistd.h
    nr_kexec_load=104,
    nr_kexec_file_load=294,
    nr_reboot=142,
    uname_machines=("aarch64", "arm64"),
)



@hookimpl
def kexecfw_architectures() -> list[ArchSpec]:
    return [ARCH]


def _running_page_size(ctx: LoadContext) -> int:
    from kexecfw.running import read_vmcoreinfo
    try:
        return read_vmcoreinfo(ctx.sysroot).page_size or ctx.arch.page_size
    except BadInputError:
        return ctx.arch.page_size       # no readable proc/kcore (not root, or a sparse snapshot)


@hookimpl
def kexecfw_probe_kernel(ctx: LoadContext, kernel_file: KernelFile) -> KernelImage | None:
    from kexecfw.plugins.arm64.image import check_loadable, is_uki, unwrap
    what = str(kernel_file.path)
    data = kernel_file.view      # the mapped file: a plain Image's payload is the file itself, not a copy
    probed = unwrap(data, what)
    if probed is None:
        if is_uki(data):
            raise BadInputError(f"{what} is a Unified Kernel Image (UKI); extract its .linux section "
                                "(objcopy -O binary --only-section=.linux) and its .initrd, and load those")
        return None
    check_loadable(probed.header, what, _running_page_size(ctx))
    h = probed.header
    details = {"text_offset": h.text_offset, "image_size": h.image_size, "flags": h.flags,
               "page_size": h.page_size, "placement_anywhere": h.placement_anywhere,
               "efi_stub": h.efi_stub, "file_size": len(data)}
    return KernelImage(arch=ARCH.name, format=probed.format, payload=probed.payload, details=details)


@hookimpl
def kexecfw_memory_map(ctx: LoadContext) -> MemoryMap | None:
    """iomem, plus what the running device tree reserves (/memreserve/, no-reuse /reserved-memory) and
    iomem does not already mark: the next kernel honours those reservations too."""
    from kexecfw.dtboot import add_firmware_reservations
    from kexecfw.memory.iomem import read_iomem
    return add_firmware_reservations(ctx, read_iomem(ctx.sysroot))


@hookimpl
def kexecfw_place_kernel(ctx: LoadContext, planner: Planner) -> int | None:
    from kexecfw.flatimage import place_kernel
    return place_kernel(ctx, planner)


@hookimpl
def kexecfw_place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment | None:
    from kexecfw.plugins.arm64 import placement
    return placement.place_initrd(ctx, planner, initrd)


@hookimpl
def kexecfw_elfcore_info(ctx: LoadContext) -> ElfcoreInfo | None:
    from kexecfw.memory.iomem import read_iomem
    from kexecfw.plugins.arm64.vmcore_facts import kernel_address_space
    memmap = ctx.memmap if ctx.memmap is not None else read_iomem(ctx.sysroot)
    space = kernel_address_space(ctx.sysroot, memmap)
    ctx.artifacts["arm64_address_space"] = space
    ctx.note(f"_text {space.text_vaddr:#x} at physical {space.text_paddr:#x} ({space.text_source}); "
             f"kernel image {space.text_size:#x} bytes; PAGE_OFFSET {space.page_offset:#x} (VA_BITS "
             f"{space.va_bits}), PHYS_OFFSET {space.phys_offset:#x}")
    return ElfcoreInfo(machine=EM_AARCH64,
                       kernel_text=KernelTextLoad(space.text_vaddr, space.text_paddr, space.text_size),
                       page_offset=space.page_offset, phys_offset=space.phys_offset)


@hookimpl
def kexecfw_boot_params(ctx: LoadContext, planner: Planner, kernel_entry: int) -> bool | None:
    from kexecfw.dtboot import add_dtb
    from kexecfw.plugins.arm64 import placement
    add_dtb(ctx, planner, lambda blob: placement.place_dtb(planner, blob))
    return True


@hookimpl
def kexecfw_purgatory(ctx: LoadContext, planner: Planner, kernel_entry: int) -> PurgatoryObject | None:
    from kexecfw.plugins.arm64 import placement
    dtb = planner.get("dtb")
    if dtb is None:
        raise BadInputError("the arm64 purgatory needs the DTB segment; kexecfw_boot_params did not add one")
    try:
        with open(PURGATORY_FILE, "rb") as f:
            elf = f.read()
    except OSError:
        raise BadInputError(f"the arm64 purgatory {PURGATORY_FILE} is missing; build it with "
                            "`make purgatory` (needs gcc-aarch64-linux-gnu) or reinstall kexecfw") from None
    return PurgatoryObject(
        elf=elf,
        entry_symbol="purgatory_start",
        min_addr=placement.purgatory_min_addr(planner),
        symbols={"purgatory_kernel_entry": kernel_entry.to_bytes(8, "little"),
                 "purgatory_dtb_addr": dtb.mem.to_bytes(8, "little")},
    )


@hookimpl
def kexecfw_relocation_types(machine: int) -> dict[int, tuple[str, RelocationApplier]] | None:
    from kexecfw.plugins.arm64.relocations import RELOCATION_TYPES
    return dict(RELOCATION_TYPES)
