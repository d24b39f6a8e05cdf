"""What kexec_file_load will build: the kernel's own segment plan, predicted in user space.

With kexec_file_load we hand the kernel two file descriptors and a command
line; it places the segments itself. The prediction follows Linux 6.1
(arch/x86/kernel/kexec-bzimage64.c bzImage64_load, arch/x86/kernel/crash.c,
kernel/kexec_file.c kexec_locate_mem_hole) so that a dry run shows the same
kind of plan as a classic load:

* panic: elfcorehdr first, bottom-up in the crash region;
* the purgatory the kernel carries (dug out of the bzImage), top-down from 0x3000;
* boot_params + command line + setup_data, top-down from 0x3000;
* the protected-mode kernel, top-down, aligned to kernel_alignment, above pref_address;
* the initrd, top-down above 16 MiB.

"Top-down" is within one memory resource: a panic load searches the crash
region; a normal load walks System RAM resources from the lowest (Linux before
6.7) or from the highest (6.7 and later), taking the first that fits.
"""
from __future__ import annotations

import struct

from kexecfw.elfcore import build_elfcorehdr, elfcore_program_headers
from kexecfw.errors import BadInputError, NoSpaceError
from kexecfw.memory.holes import find_hole
from kexecfw.memory.model import RegionKind
from kexecfw.memory.ranges import Range, align_up, subtract
from kexecfw.model import (KEXEC_FILE_NO_INITRAMFS, KEXEC_FILE_ON_CRASH, LoadContext)
from kexecfw.records import Record
from kexecfw.segments.plan import Plan, Segment

from kexecfw.plugins.x86_64.bzimage import XLF_CAN_BE_LOADED_ABOVE_4G, BzImage

# arch/x86/kernel/kexec-bzimage64.c
MAX_ELFCOREHDR_STR_LEN = 30          # "elfcorehdr=0x<64-bit value> "
MIN_PURGATORY_ADDR = 0x3000
MIN_BOOTPARAM_ADDR = 0x3000
MIN_KERNEL_LOAD_ADDR = 0x100000
MIN_INITRD_LOAD_ADDR = 0x1000000
LOADER_TYPE_KEXEC = 0x0D << 4        # what the kernel writes as type_of_loader
SETUP_DATA_SIZE = 16                 # struct setup_data header
EFI_SETUP_DATA_SIZE = 96             # struct efi_setup_data: fw_vendor, __unused, tables, smbios, reserved[8]
IMA_SETUP_DATA_SIZE = 16             # struct ima_setup_data: addr, size
RNG_SEED_LENGTH = 32
ELF_CORE_HEADER_ALIGN = 4096
ELF64_EHDR_SIZE, ELF64_PHDR_SIZE = 64, 56
SHF_EXECINSTR = 0x4
REVERSE_WALK_SINCE = (6, 7)          # kexec_walk_resources uses walk_system_ram_res_rev for top-down
# locate_mem_hole_top_down started at end - memsz (not end - memsz + 1) before this release, so the
# top page of a resource stayed unused; the lab's 6.1 guests show it (boot_params one page lower)
TOP_DOWN_EXACT_SINCE = (6, 5)


class _KernelPlacer(Record):
    """kexec_add_buffer's search: per resource, top-down or bottom-up, avoiding placed segments."""

    resources: list[Range]
    reverse_for_top_down: bool
    top_down_skips_last_page: bool
    page_size: int = 4096

    def __post_init__(self) -> None:
        self.segments: list[Segment] = []

    def add(self, name: str, buf: bytes, memsz: int, align: int, buf_min: int, top_down: bool) -> Segment:
        memsz = align_up(max(memsz, len(buf), 1), self.page_size)
        align = max(align, self.page_size)
        order = reversed(self.resources) if top_down and self.reverse_for_top_down else iter(self.resources)
        for res in order:
            if res.size < memsz or res.last < buf_min:
                continue
            free = subtract([res], [s.range for s in self.segments])
            top = res.end - 1 if top_down and self.top_down_skips_last_page else res.end
            mem = find_hole(free, memsz, align=align, min_addr=buf_min, max_addr=top, top_down=top_down)
            if mem is not None:
                seg = Segment(name, bytes(buf), mem, memsz)
                self.segments.append(seg)
                return seg
        raise NoSpaceError(f"the kernel will find no place for the {name} segment ({memsz / 2**20:.1f} MiB, "
                           f"aligned {align:#x}, above {buf_min:#x}); reserve more memory")


def _config_has(ctx: LoadContext, option: str) -> bool | None:
    release = (ctx.sysroot.read_optional("proc/sys/kernel/osrelease") or "").strip()
    for path in ([f"boot/config-{release}"] if release else []) + ["proc/config"]:
        text = ctx.sysroot.read_optional(path)
        if text:
            return f"{option}=y" in text
    return None


def _kernel_purgatory(ctx: LoadContext, image: BzImage) -> tuple[int, int, int]:
    """(memsz, align, entry offset) of the purgatory this kernel carries."""
    from kexecfw.purgatory import PurgatoryLayout

    from kexecfw.plugins.x86_64 import EM_X86_64, PURGATORY_FILE
    from kexecfw.plugins.x86_64.payload import decompress_payload, embedded_purgatory
    obj = None
    try:
        obj = embedded_purgatory(decompress_payload(image))
    except BadInputError as e:
        ctx.note(f"cannot read the kernel's own purgatory ({e})")
    if obj is None:
        with open(PURGATORY_FILE, "rb") as f:
            ours = PurgatoryLayout(f.read(), EM_X86_64)
        ctx.note("purgatory size: kexecfw's own object as an estimate (the kernel's was not found)")
        return ours.size, ours.align, _symbol_offset(ours, "purgatory_start")
    layout = PurgatoryLayout(obj, EM_X86_64)
    (e_entry,) = struct.unpack_from("<Q", obj, 0x18)
    # kexec_purgatory_setup_sechdrs: the entry is e_entry within the executable section holding it
    for sec in layout.elf.sections:
        if sec.index in layout.offsets and sec.flags & SHF_EXECINSTR and sec.addr <= e_entry < sec.addr + sec.size:
            return layout.size, layout.align, layout.offsets[sec.index] + e_entry - sec.addr
    return layout.size, layout.align, e_entry


def _symbol_offset(layout, name: str) -> int:  # noqa: ANN001  (a kexecfw.purgatory.PurgatoryLayout)
    for sym in layout.elf.symbols(layout.elf.symtab()):
        if sym.name == name and sym.shndx in layout.offsets:
            return layout.offsets[sym.shndx] + sym.value
    return 0


def predict_file_load(ctx: LoadContext) -> Plan:
    from kexecfw.load import discover, read_input

    from kexecfw.plugins.x86_64.bootparams import SetupData, build_zero_page, rng_seed
    from kexecfw.plugins.x86_64.e820 import crash_e820, normal_e820
    from kexecfw.plugins.x86_64.memmap import iomem_regions, read_efi_runtime_map, read_firmware_memmap
    from kexecfw.plugins.x86_64.running import running_kernel
    hooks, opts = ctx.hooks, ctx.options
    discover(ctx)
    crash = ctx.memmap.main_crash_region
    image: BzImage = ctx.artifacts["x86_64.bzimage"]
    h = image.header
    if not h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
        raise BadInputError(f"{opts.kernel} lacks XLF_CAN_BE_LOADED_ABOVE_4G, which kexec_file_load requires; "
                            "use --classic")
    initrd = read_input(opts.initrd, "initrd") if opts.initrd else None
    cmdline = ctx.cmdline.strip()
    cmdline_len = len(cmdline) + 1                       # the syscall passes the terminating NUL
    if cmdline_len + MAX_ELFCOREHDR_STR_LEN > h.cmdline_size:
        raise BadInputError(f"the command line is {cmdline_len} bytes; kexec_file_load needs it plus "
                            f"{MAX_ELFCOREHDR_STR_LEN} to fit this kernel's {h.cmdline_size}: shorten it")
    rk = running_kernel(ctx)
    iomem = iomem_regions(ctx.sysroot)
    if opts.panic:
        resources = [crash]
    else:
        resources = [r.range for r in iomem if r.kind is RegionKind.RAM and r.depth == 0]
    release = rk.release or (6, 1)
    placer = _KernelPlacer(resources, reverse_for_top_down=release >= REVERSE_WALK_SINCE,
                           top_down_skips_last_page=release < TOP_DOWN_EXACT_SINCE, page_size=ctx.arch.page_size)

    elfcorehdr = None
    if opts.panic:
        info = hooks.elfcore_info(ctx)
        phdrs = elfcore_program_headers(info, ctx.sysroot, info.ram_ranges)
        header = build_elfcorehdr(info.machine, phdrs)
        size = align_up(ELF64_EHDR_SIZE + len(phdrs) * ELF64_PHDR_SIZE, ELF_CORE_HEADER_ALIGN)
        elfcorehdr = placer.add("elfcorehdr", header.ljust(size, b"\0"), size, ELF_CORE_HEADER_ALIGN, 0, False)
        ctx.artifacts["elfcorehdr_phdrs"] = phdrs

    purgatory_size, purgatory_align, entry_offset = _kernel_purgatory(ctx, image)
    purgatory = placer.add("purgatory", b"", purgatory_size, purgatory_align, MIN_PURGATORY_ADDR, True)

    efi_map_sz = 0
    efi = read_efi_runtime_map(ctx.sysroot)
    if efi and rk.efi_info[:4] in (b"EL64", b"EL32"):
        efi_map_sz = len(efi) * 48                       # efi_memory_desc_t is 40 bytes + the kernel's padding
        ctx.note("EFI: the kernel passes its runtime map; its exact descriptor size is estimated")
    bufsz = (align_up(4096 + cmdline_len + MAX_ELFCOREHDR_STR_LEN, 16) + align_up(efi_map_sz, 16)
             + SETUP_DATA_SIZE + EFI_SETUP_DATA_SIZE + SETUP_DATA_SIZE + RNG_SEED_LENGTH)
    if _config_has(ctx, "CONFIG_IMA_KEXEC"):
        bufsz += SETUP_DATA_SIZE + IMA_SETUP_DATA_SIZE
    boot_params = placer.add("boot_params", b"", bufsz, 16, MIN_BOOTPARAM_ADDR, True)

    kernel = placer.add("kernel", image.kernel, h.init_size, h.kernel_alignment,
                        max(h.pref_address, MIN_KERNEL_LOAD_ADDR), True)
    initrd_seg = None
    if initrd is not None:
        initrd_seg = placer.add("initrd", initrd, len(initrd), 4096, MIN_INITRD_LOAD_ADDR, True)

    # the zero page as the kernel fills it: its command line starts with elfcorehdr=0x... for a panic load
    kernel_cmdline = (f"elfcorehdr={elfcorehdr.mem:#x} " if elfcorehdr else "") + cmdline
    if opts.panic:
        e820 = crash_e820(iomem, ctx.memmap.crash_regions, [elfcorehdr.range])
    else:
        e820 = normal_e820(read_firmware_memmap(ctx.sysroot) or iomem)
    zero_page = build_zero_page(
        image, base=boot_params.mem, cmdline=kernel_cmdline, kernel_addr=kernel.mem,
        initrd=Range(initrd_seg.mem, initrd_seg.mem + len(initrd)) if initrd_seg else None, e820=e820,
        running_screen_info=rk.screen_info, acpi_rsdp_addr=rk.acpi_rsdp_addr,
        setup_data=[SetupData(rng_seed().type, bytes(RNG_SEED_LENGTH))])
    zp = bytearray(zero_page[:bufsz].ljust(bufsz, b"\0"))
    zp[0x210] = LOADER_TYPE_KEXEC
    zp[0x211] = 0                                        # the kernel clears loadflags
    placer.segments[placer.segments.index(boot_params)] = Segment("boot_params", bytes(zp), boot_params.mem,
                                                                  boot_params.memsz)
    ctx.artifacts["x86_64.e820"] = e820
    entry = purgatory.mem + entry_offset
    flags = (KEXEC_FILE_ON_CRASH if opts.panic else 0) | (0 if initrd is not None else KEXEC_FILE_NO_INITRAMFS)
    ctx.note(f"kexec_file_load: segments as Linux {'.'.join(map(str, rk.release or ())) or '6.1'} will place "
             f"them (predicted; the kernel builds boot_params, purgatory and elfcorehdr itself)")
    ctx.note(f"the kernel will pass: {kernel_cmdline}")
    return Plan(ctx.arch.name, "panic" if opts.panic else "normal", "kexec_file_load", entry, flags, cmdline,
                crash if opts.panic else None, list(placer.segments))
