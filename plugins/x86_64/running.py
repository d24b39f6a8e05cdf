"""What the running x86_64 kernel tells about itself through the sysroot.

Sources, each optional (a snapshot may lack some): proc/kcore's program headers
and VMCOREINFO note (kernel text, direct-map base, 5-level paging) and proc/kallsyms
(``_text``/``_end`` fallback), both read through the core's kexecfw.running;
sys/kernel/boot_params/data (the ``struct boot_params`` the running kernel was
booted with: ACPI RSDP, screen_info, EFI info) and proc/sys/kernel/osrelease.
"""
from __future__ import annotations

import struct

from kexecfw.elfnotes import PT_LOAD
from kexecfw.memory.ranges import align_up
from kexecfw.model import LoadContext
from kexecfw.records import Record
from kexecfw.running import kallsyms_symbol, read_kcore
from kexecfw.sysroot import Sysroot
from kexecfw.vmcoreinfo import VmcoreInfo

START_KERNEL_MAP = 0xFFFFFFFF80000000         # __START_KERNEL_map, arch/x86/include/asm/page_64_types.h
START_KERNEL = 0xFFFFFFFF81000000             # __START_KERNEL with CONFIG_PHYSICAL_START=0x1000000
PAGE_OFFSET_BASE_L4 = 0xFFFF888000000000      # __PAGE_OFFSET_BASE_L4
PAGE_OFFSET_BASE_L5 = 0xFF11000000000000      # __PAGE_OFFSET_BASE_L5
_NO_PADDR = (1 << 64) - 1                     # kcore's p_paddr for segments without one

BOOT_PARAMS_SIZE = 4096
# struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h)
BP_SCREEN_INFO = 0x000          # struct screen_info, 0x40 bytes
BP_ACPI_RSDP_ADDR = 0x070       # __u64 acpi_rsdp_addr
BP_EFI_INFO = 0x1C0             # struct efi_info, 0x20 bytes
BP_SECURE_BOOT = 0x1EC          # __u8 secure_boot
BP_E820_ENTRIES = 0x1E8
BP_E820_TABLE = 0x2D0
SCREEN_INFO_SIZE = 0x40
EFI_INFO_SIZE = 0x20
# struct efi_info: efi_loader_signature, efi_systab, efi_memdesc_size, efi_memdesc_version,
# efi_memmap, efi_memmap_size, efi_systab_hi, efi_memmap_hi
EFI_INFO = struct.Struct("<4sIIIIIII")


class RunningKernel(Record):
    """Facts about the sysroot's running kernel; None where the sysroot does not tell."""

    osrelease: str | None
    vmcoreinfo: VmcoreInfo | None
    text_vaddr: int | None          # _text
    text_size: int | None           # _end - _text, page-aligned (kcore's KCORE_TEXT segment)
    text_paddr: int | None
    page_offset: int | None         # direct-map base (KASLR-randomised)
    la57: bool | None               # 5-level paging on
    boot_params: bytes | None       # sys/kernel/boot_params/data
    efi_systab: dict[str, int]      # sys/firmware/efi/systab: ACPI20=, ACPI=, SMBIOS= ... (EFI boots only)

    @property
    def release(self) -> tuple[int, int] | None:
        if not self.osrelease:
            return None
        try:
            major, minor = self.osrelease.split("-", 1)[0].split(".")[:2]
            return int(major), int(minor)
        except ValueError:
            return None

    @property
    def acpi_rsdp_addr(self) -> int:
        """Where the next kernel finds ACPI: the boot loader's value, else EFI's configuration table.

        An EFI-booted kernel finds the RSDP through EFI and leaves boot_params.acpi_rsdp_addr 0; a
        kernel we start without EFI state must be told (kexec-tools reads the same systab file)."""
        if self.boot_params:
            value = struct.unpack_from("<Q", self.boot_params, BP_ACPI_RSDP_ADDR)[0]
            if value:
                return value
        return self.efi_systab.get("ACPI20") or self.efi_systab.get("ACPI") or 0

    @property
    def screen_info(self) -> bytes:
        if not self.boot_params:
            return bytes(SCREEN_INFO_SIZE)
        return self.boot_params[BP_SCREEN_INFO:BP_SCREEN_INFO + SCREEN_INFO_SIZE]

    @property
    def efi_info(self) -> bytes:
        if not self.boot_params:
            return bytes(EFI_INFO_SIZE)
        return self.boot_params[BP_EFI_INFO:BP_EFI_INFO + EFI_INFO_SIZE]


def read_running_kernel(sysroot: Sysroot) -> RunningKernel:
    osrelease = sysroot.read_optional("proc/sys/kernel/osrelease")
    info: VmcoreInfo | None = None
    text_vaddr = text_size = text_paddr = page_offset = None
    if sysroot.exists("proc/kcore"):
        header, info = read_kcore(sysroot)
        for ph in header.phdrs:
            if ph.type != PT_LOAD or ph.paddr == _NO_PADDR:
                continue
            if ph.vaddr >= START_KERNEL_MAP:
                text_vaddr, text_size, text_paddr = ph.vaddr, ph.memsz, ph.paddr
            elif page_offset is None:
                page_offset = ph.vaddr - ph.paddr     # a KCORE_RAM segment: vaddr = __va(paddr)
    if text_vaddr is None:
        text_vaddr, text_size = _text_from_kallsyms(sysroot, info)
    if text_paddr is None and text_vaddr is not None and info is not None:
        phys_base = info.number("phys_base")
        if phys_base is not None:
            text_paddr = text_vaddr - START_KERNEL_MAP + phys_base
    la57: bool | None = None
    if info is not None and info.number("pgtable_l5_enabled") is not None:
        la57 = bool(info.number("pgtable_l5_enabled"))
    elif page_offset is not None:
        la57 = page_offset < PAGE_OFFSET_BASE_L4 and page_offset >= PAGE_OFFSET_BASE_L5
    boot_params = None
    if sysroot.exists("sys/kernel/boot_params/data"):
        boot_params = sysroot.read_bytes("sys/kernel/boot_params/data")
        if len(boot_params) < BOOT_PARAMS_SIZE:
            boot_params = None
    return RunningKernel(osrelease.strip() if osrelease else None, info, text_vaddr, text_size, text_paddr,
                         page_offset, la57, boot_params, _efi_systab(sysroot))


def _efi_systab(sysroot: Sysroot) -> dict[str, int]:
    """KEY=0xADDR lines of sys/firmware/efi/systab (drivers/firmware/efi/efi.c systab_show)."""
    out: dict[str, int] = {}
    for line in (sysroot.read_optional("sys/firmware/efi/systab") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            try:
                out[key.strip()] = int(value.strip(), 16)
            except ValueError:
                continue
    return out


def _text_from_kallsyms(sysroot: Sysroot, info: VmcoreInfo | None) -> tuple[int | None, int | None]:
    start = kallsyms_symbol(sysroot, "_text")
    if not start and info is not None and info.kernel_offset is not None:
        start = START_KERNEL + info.kernel_offset
    if not start:
        return None, None
    end = kallsyms_symbol(sysroot, "_end")
    return start, (align_up(end - start, 4096) if end and end > start else None)


def running_kernel(ctx: LoadContext) -> RunningKernel:
    """The running kernel's facts, read once per load and kept in ``ctx.artifacts``."""
    rk = ctx.artifacts.get("x86_64.running_kernel")
    if rk is None:
        rk = read_running_kernel(ctx.sysroot)
        ctx.artifacts["x86_64.running_kernel"] = rk
    return rk
