"""EFI state for the next kernel: efi_info, a copy of the runtime memory map, and SETUP_EFI.

A kernel started by kexec on an EFI machine cannot call SetVirtualAddressMap again; it keeps
EFI runtime services only if told where the firmware's runtime regions are already mapped
(the running kernel's virtual addresses). Linux's own kexec_file loader passes exactly this
(arch/x86/kernel/kexec-bzimage64.c setup_efi_state); layouts: struct efi_info and struct
setup_data in arch/x86/include/uapi/asm/bootparam.h, struct efi_setup_data in
arch/x86/include/asm/efi.h, efi_memory_desc_t in include/linux/efi.h.
"""
from __future__ import annotations

import struct

from kexecfw.records import Record
from kexecfw.sysroot import Sysroot

from kexecfw.plugins.x86_64.memmap import EfiRuntimeRegion, read_efi_runtime_map
from kexecfw.plugins.x86_64.running import BP_EFI_INFO, BP_SECURE_BOOT, EFI_INFO, RunningKernel

EFI64_LOADER_SIGNATURE = b"EL64"
# efi_memory_desc_t: u32 type, u32 pad, u64 phys_addr, u64 virt_addr, u64 num_pages, u64 attribute
EFI_MEMORY_DESC = struct.Struct("<IIQQQQ")
# struct efi_setup_data: u64 fw_vendor, u64 __unused, u64 tables, u64 smbios, u64 reserved[8]
EFI_SETUP_DATA = struct.Struct("<QQQQ64x")


class EfiHandover(Record, frozen=True):
    signature: bytes
    systab: int
    memdesc_size: int
    memdesc_version: int
    memmap: bytes               # the runtime descriptors, memdesc_size apart
    setup_data: bytes           # struct efi_setup_data
    secure_boot: int

    def efi_info(self, memmap_addr: int) -> bytes:
        return EFI_INFO.pack(self.signature, self.systab & 0xFFFFFFFF, self.memdesc_size, self.memdesc_version,
                             memmap_addr & 0xFFFFFFFF, len(self.memmap), self.systab >> 32, memmap_addr >> 32)


def _hex(sysroot: Sysroot, rel: str) -> int | None:
    text = sysroot.read_optional(rel)
    try:
        return int(text.strip(), 16) if text else None
    except ValueError:
        return None


def efi_handover(sysroot: Sysroot, running: RunningKernel) -> EfiHandover | None:
    """What to pass, or None when the running kernel was not booted by 64-bit EFI or hides its state."""
    if not running.boot_params:
        return None
    sig, systab_lo, desc_size, desc_version, _, _, systab_hi, _ = EFI_INFO.unpack_from(running.boot_params,
                                                                                         BP_EFI_INFO)
    regions: list[EfiRuntimeRegion] = read_efi_runtime_map(sysroot)
    fw_vendor = _hex(sysroot, "sys/firmware/efi/fw_vendor")
    tables = _hex(sysroot, "sys/firmware/efi/config_table")
    if sig != EFI64_LOADER_SIGNATURE or not regions or fw_vendor is None or tables is None:
        return None
    desc_size = max(desc_size, EFI_MEMORY_DESC.size)
    memmap = b"".join(EFI_MEMORY_DESC.pack(r.type, 0, r.phys_addr, r.virt_addr, r.num_pages, r.attribute)
                      .ljust(desc_size, b"\0") for r in regions)
    smbios = running.efi_systab.get("SMBIOS", 0)
    return EfiHandover(sig, systab_hi << 32 | systab_lo, desc_size, desc_version, memmap,
                       EFI_SETUP_DATA.pack(fw_vendor, 0, tables, smbios), running.boot_params[BP_SECURE_BOOT])
