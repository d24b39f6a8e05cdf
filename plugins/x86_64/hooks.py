"""The x86_64 plugin's hook implementations; registered as the package kexecfw.plugins.x86_64 (see its __init__)."""
from __future__ import annotations

import os
import struct

from kexecfw import hookimpl
from kexecfw.plugins.x86_64.capture import EM_X86_64
from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.memory.model import MemoryMap, RegionKind
from kexecfw.memory.ranges import Range, merge, subtract
from kexecfw.model import (ArchSpec, ElfcoreInfo, KernelFile, KernelImage, KernelTextLoad, LoadContext,
                           PurgatoryObject, RelocationApplier)
from kexecfw.segments.plan import Plan, Segment
from kexecfw.segments.planner import Planner


ARCH = ArchSpec(
    name="x86_64",
    aliases=("amd64", "x86-64", "x64"),
    elf_machine=EM_X86_64,
    page_size=4096,
    # arch/x86/entry/syscalls/syscall_64.tbl
    nr_kexec_load=246,
    nr_kexec_file_load=320,
    nr_reboot=169,
    uname_machines=("x86_64",),
    file_load_default=True,     # distributions load x86_64 kernels with kexec_file_load
)

MIN_KERNEL_LOAD_ADDR = 0x100000     # arch/x86/include/asm/kexec-bzimage64.h and boot.rst: above 1 MiB
LOW_1M = Range(0, 1 << 20)
_4G = 1 << 32
PURGATORY_FILE = os.path.join(os.path.dirname(__file__), "purgatory", "purgatory.ro")


@hookimpl
def kexecfw_architectures() -> list[ArchSpec]:
    return [ARCH]


# --- kernel image -------------------------------------------------------------------------

@hookimpl
def kexecfw_probe_kernel(ctx: LoadContext, kernel_file: KernelFile) -> KernelImage | None:
    from kexecfw.plugins.x86_64.bzimage import looks_like_bzimage, parse_bzimage
    from kexecfw.plugins.x86_64.running import running_kernel
    data = kernel_file.view      # the mapped file: the payload is a slice of it, not a copy
    if not looks_like_bzimage(data):
        if data[:4] == b"\x7fELF":
            raise BadInputError(f"{kernel_file.path} is an ELF file (a vmlinux?), not a bzImage; kexecfw loads "
                                "x86_64 kernels as bzImage (arch/x86/boot/bzImage or /boot/vmlinuz-*)")
        return None
    image = parse_bzimage(data, str(kernel_file.path))
    running = running_kernel(ctx)
    if running.la57 and not image.supports_5level:
        raise BadInputError(f"{kernel_file.path} cannot boot with 5-level paging (xloadflags lacks XLF_5LEVEL) "
                            "and the running kernel uses it: boot the running kernel with no5lvl or load a "
                            "newer kernel")
    ctx.artifacts["x86_64.bzimage"] = image
    details = image.details()
    details["running_kernel_5level"] = running.la57
    return KernelImage(ARCH.name, "bzImage", image.kernel, details)


# --- memory -------------------------------------------------------------------------------

@hookimpl
def kexecfw_memory_map(ctx: LoadContext) -> MemoryMap | None:
    from kexecfw.plugins.x86_64.memmap import read_efi_runtime_map, x86_memory_map
    memmap = x86_memory_map(ctx.sysroot)
    efi = read_efi_runtime_map(ctx.sysroot)
    if efi:
        ctx.artifacts["x86_64.efi_runtime_map"] = efi
        ctx.note(f"EFI runtime map: {len(efi)} regions, handed to the next kernel with the firmware's tables")
    return memmap


# --- segments -----------------------------------------------------------------------------

def _bzimage(ctx: LoadContext):
    image = ctx.artifacts.get("x86_64.bzimage")
    if image is None:
        raise KexecfwError("the x86_64 plugin was asked to place a kernel it did not probe")
    return image


@hookimpl
def kexecfw_place_kernel(ctx: LoadContext, planner: Planner) -> int | None:
    from kexecfw.plugins.x86_64.bzimage import XLF_CAN_BE_LOADED_ABOVE_4G
    image = _bzimage(ctx)
    h = image.header
    memsz = max(h.init_size, len(image.kernel))
    max_addr = (1 << 64) if h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G else _4G
    # top-down like kexec-tools: the kernel decompresses in place within init_size, so the
    # highest kernel_alignment boundary that fits keeps low memory for the rest
    seg = planner.add("kernel", image.kernel, memsz=memsz, align=h.kernel_alignment,
                      min_addr=MIN_KERNEL_LOAD_ADDR, max_addr=max_addr, top_down=True)
    ctx.note(f"bzImage protocol {image.protocol}: protected-mode kernel at {seg.mem:#x} "
             f"(init_size {h.init_size:#x}, alignment {h.kernel_alignment:#x}); 64-bit entry at +0x200")
    return seg.mem + image.entry64_offset


@hookimpl
def kexecfw_place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment | None:
    from kexecfw.plugins.x86_64.bzimage import XLF_CAN_BE_LOADED_ABOVE_4G
    h = _bzimage(ctx).header
    if h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
        max_addr = 1 << 64                       # ext_ramdisk_image carries the high half
    else:
        max_addr = h.initrd_addr_max + 1
    return planner.add("initrd", initrd, max_addr=max_addr, top_down=True)


@hookimpl
def kexecfw_elfcore_info(ctx: LoadContext) -> ElfcoreInfo | None:
    from kexecfw.plugins.x86_64.memmap import iomem_regions
    from kexecfw.plugins.x86_64.running import PAGE_OFFSET_BASE_L4, PAGE_OFFSET_BASE_L5, running_kernel
    rk = running_kernel(ctx)
    if rk.text_vaddr is None or rk.text_paddr is None or rk.text_size is None:
        raise BadInputError(f"cannot find the running kernel's text: {ctx.sysroot.file('proc/kcore')} (with "
                            "VMCOREINFO) or proc/kallsyms with _text/_end is needed; run as root")
    page_offset = rk.page_offset
    if page_offset is None:
        page_offset = PAGE_OFFSET_BASE_L5 if rk.la57 else PAGE_OFFSET_BASE_L4
        ctx.note(f"direct map base unknown (no RAM segment in proc/kcore): assuming {page_offset:#x} (no KASLR)")
    # the dump's RAM: System RAM as the kernel sees it, less the crash regions and the low 1 MiB,
    # which Linux 5.8+ keeps reserved in both kernels (the kernel's own kexec_file loader does the same)
    iomem = iomem_regions(ctx.sysroot)
    ram = merge(r.range for r in iomem if r.kind is RegionKind.RAM and r.depth == 0)
    crash = ctx.memmap.crash_regions if ctx.memmap is not None else []
    ram_ranges = subtract(ram, crash + [LOW_1M])
    release = rk.release
    if release is not None and release < (5, 8):
        ctx.note(f"running kernel {rk.osrelease} predates 5.8: it may use the low 640 KiB, which this dump "
                 "leaves out (kexec-tools copies it to a backup segment)")
    ctx.note(f"elfcorehdr: kernel text {rk.text_vaddr:#x} -> {rk.text_paddr:#x} ({rk.text_size:#x} bytes), "
             f"direct map at {page_offset:#x} ({'5' if rk.la57 else '4'}-level paging), "
             f"{len(ram_ranges)} RAM ranges")
    return ElfcoreInfo(machine=EM_X86_64, kernel_text=KernelTextLoad(rk.text_vaddr, rk.text_paddr, rk.text_size),
                       page_offset=page_offset, phys_offset=0, ram_ranges=ram_ranges)


@hookimpl
def kexecfw_boot_params(ctx: LoadContext, planner: Planner, kernel_entry: int) -> bool | None:
    from kexecfw.plugins.x86_64.bootparams import build_zero_page, rng_seed
    from kexecfw.plugins.x86_64.e820 import crash_e820, normal_e820
    from kexecfw.plugins.x86_64.efi import efi_handover
    from kexecfw.plugins.x86_64.memmap import iomem_regions, read_firmware_memmap
    from kexecfw.plugins.x86_64.running import running_kernel
    image = _bzimage(ctx)
    rk = running_kernel(ctx)
    kernel = planner.get("kernel")
    initrd_seg = planner.get("initrd")
    initrd = Range(initrd_seg.mem, initrd_seg.mem + initrd_seg.bufsz) if initrd_seg else None
    cmdline = ctx.cmdline.strip()
    if ctx.panic:
        elfcorehdr = planner.get("elfcorehdr")
        if elfcorehdr is None:
            raise KexecfwError("a panic load reached boot_params without an elfcorehdr segment")
        # kexec-tools' form: the address in KiB (the kernel's parser takes [size@]offset[KMG])
        cmdline = f"{cmdline} elfcorehdr={elfcorehdr.mem >> 10}K".strip()
        e820 = crash_e820(iomem_regions(ctx.sysroot), ctx.memmap.crash_regions, [elfcorehdr.range])
    else:
        e820 = normal_e820(read_firmware_memmap(ctx.sysroot) or iomem_regions(ctx.sysroot))
    if rk.acpi_rsdp_addr and image.header.version < 0x020E and "acpi_rsdp=" not in cmdline:
        cmdline = f"{cmdline} acpi_rsdp={rk.acpi_rsdp_addr:#x}".strip()   # boot_params.acpi_rsdp_addr is 2.14+
    ctx.cmdline = cmdline
    seeds = [rng_seed()]
    efi = efi_handover(ctx.sysroot, rk)
    build = dict(cmdline=cmdline, kernel_addr=kernel.mem if kernel else 0, initrd=initrd, e820=e820,
                 running_screen_info=rk.screen_info, acpi_rsdp_addr=rk.acpi_rsdp_addr, setup_data=seeds, efi=efi)
    size = len(build_zero_page(image, base=0, **build))
    seg = planner.add("boot_params", bytes(size), top_down=True)
    zero_page = build_zero_page(image, base=seg.mem, **build)
    planner.replace(seg, zero_page)
    ctx.artifacts["x86_64.e820"] = e820
    ctx.note(f"boot_params at {seg.mem:#x}: {len(e820)} e820 entries ({'crash map' if ctx.panic else 'firmware map'})"
             f", acpi_rsdp_addr {rk.acpi_rsdp_addr:#x}, setup_data: RNG seed"
             + (f", EFI ({len(efi.memmap) // efi.memdesc_size} runtime regions)" if efi else ""))
    return True


@hookimpl
def kexecfw_purgatory(ctx: LoadContext, planner: Planner, kernel_entry: int) -> PurgatoryObject | None:
    try:
        with open(PURGATORY_FILE, "rb") as f:
            elf = f.read()
    except FileNotFoundError:
        raise KexecfwError(f"{PURGATORY_FILE} is missing: build it with `make purgatory` "
                           "(or reinstall kexecfw)") from None
    boot_params = planner.get("boot_params")
    if boot_params is None:
        raise KexecfwError("the x86_64 purgatory needs the boot_params segment, which was not placed")
    return PurgatoryObject(
        elf=elf, entry_symbol="purgatory_start", align=4096, top_down=True,
        # entry.S hands these to the kernel: %rip = 64-bit entry, %rsi = boot_params
        symbols={"purgatory_kernel_entry": struct.pack("<Q", kernel_entry),
                 "purgatory_boot_params": struct.pack("<Q", boot_params.mem)})


@hookimpl
def kexecfw_relocation_types(machine: int) -> dict[int, tuple[str, RelocationApplier]] | None:
    from kexecfw.plugins.x86_64.relocations import X86_64_RELOCATIONS
    return dict(X86_64_RELOCATIONS)


@hookimpl
def kexecfw_plan_load(ctx: LoadContext) -> Plan | None:
    """kexec_file_load plans: what the kernel will build. Classic loads use the core's sequence."""
    from kexecfw.load import file_load_requested
    from kexecfw.syscalls import lockdown_mode
    if not file_load_requested(ctx):
        mode = lockdown_mode(ctx.sysroot)
        if mode:
            ctx.note(f"the kernel is locked down ({mode}): it will refuse kexec_load; "
                     "kexec_file_load (without --classic, with a signed kernel) is the way")
        return None
    from kexecfw.plugins.x86_64.fileload import predict_file_load
    return predict_file_load(ctx)
