"""The zero page: ``struct boot_params`` plus command line and setup_data chain, as one segment.

Layout: arch/x86/include/uapi/asm/bootparam.h (struct boot_params, struct
setup_data, struct boot_e820_entry) and Documentation/arch/x86/boot.rst
("64-bit boot protocol": only the zero page, the command line and the
protected-mode kernel need to be in place; %rsi points at the zero page).

The segment holds, in order: boot_params (4 KiB), the NUL-terminated command
line, then the setup_data nodes (8-byte aligned), so one address range covers
everything the next kernel's KASLR must avoid.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from kexecfw.errors import BadInputError
from kexecfw.memory.ranges import Range, align_up
from kexecfw.plugins.x86_64.bzimage import SETUP_HEADER_OFFSET, BzImage, SetupHeader
from kexecfw.plugins.x86_64.running import (BOOT_PARAMS_SIZE, BP_ACPI_RSDP_ADDR, BP_E820_ENTRIES, BP_E820_TABLE,
                                             BP_EFI_INFO, BP_SCREEN_INFO, BP_SECURE_BOOT, SCREEN_INFO_SIZE)
from kexecfw.records import Record

# struct boot_params offsets not in running.py (bootparam.h)
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_SENTINEL = 0x1EF

E820_MAX_ENTRIES_ZEROPAGE = 128
# struct boot_e820_entry { __u64 addr; __u64 size; __u32 type; } __packed
BOOT_E820_ENTRY = struct.Struct("<QQI")
# struct setup_data { __u64 next; __u32 type; __u32 len; __u8 data[]; }
SETUP_DATA_HEADER = struct.Struct("<QII")
SETUP_E820_EXT = 1
SETUP_EFI = 4
SETUP_RNG_SEED = 9
RNG_SEED_LENGTH = 32            # what the kernel's own kexec_file loader passes (kexec-bzimage64.c)

# e820 types (arch/x86/include/asm/e820/types.h)
E820_TYPE_RAM = 1
E820_TYPE_RESERVED = 2
E820_TYPE_ACPI = 3
E820_TYPE_NVS = 4
E820_TYPE_UNUSABLE = 5
E820_TYPE_PMEM = 7
E820_TYPE_PRAM = 12
E820_TYPE_NAMES = {E820_TYPE_RAM: "usable", E820_TYPE_RESERVED: "reserved", E820_TYPE_ACPI: "ACPI data",
                   E820_TYPE_NVS: "ACPI NVS", E820_TYPE_UNUSABLE: "unusable", E820_TYPE_PMEM: "persistent (type 7)",
                   E820_TYPE_PRAM: "persistent (type 12)"}

#: type_of_loader for a boot loader without an assigned ID (boot.rst: "0xFF: undefined")
LOADER_TYPE_UNDEFINED = 0xFF


class E820Entry(Record, frozen=True):
    range: Range
    type: int

    def pack(self) -> bytes:
        return BOOT_E820_ENTRY.pack(self.range.start, self.range.size, self.type)

    def __str__(self) -> str:
        return f"[mem {self.range.start:#018x}-{self.range.last:#018x}] {E820_TYPE_NAMES.get(self.type, self.type)}"


class SetupData(Record, frozen=True):
    type: int
    data: bytes


def rng_seed() -> SetupData:
    """Fresh randomness for the next kernel's RNG (SETUP_RNG_SEED, read by Linux 5.20+/6.1)."""
    return SetupData(SETUP_RNG_SEED, os.urandom(RNG_SEED_LENGTH))


def build_zero_page(image: BzImage, *, base: int, cmdline: str, kernel_addr: int, initrd: Range | None,
                    e820: list[E820Entry], running_screen_info: bytes = bytes(SCREEN_INFO_SIZE),
                    acpi_rsdp_addr: int = 0, setup_data: Sequence[SetupData] = (),
                    efi: "EfiHandover | None" = None) -> bytes:
    """The whole segment's bytes for a zero page that will live at physical ``base``.

    With ``efi``, the runtime memory map copy follows the command line and a SETUP_EFI node
    joins the chain, so the next kernel keeps EFI runtime services."""
    raw_cmdline = cmdline.encode() + b"\0"
    if len(raw_cmdline) - 1 > image.header.cmdline_size:
        raise BadInputError(f"the command line is {len(raw_cmdline) - 1} bytes; this kernel takes at most "
                            f"{image.header.cmdline_size} (setup_header.cmdline_size): shorten --append")
    cmdline_addr = base + BOOT_PARAMS_SIZE
    nodes = list(setup_data)
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        extra = e820[E820_MAX_ENTRIES_ZEROPAGE:]
        nodes.insert(0, SetupData(SETUP_E820_EXT, b"".join(e.pack() for e in extra)))
        e820 = e820[:E820_MAX_ENTRIES_ZEROPAGE]
    # after the command line: the EFI memory map copy, then the setup_data chain (16-byte aligned)
    blob = bytearray()
    pos = align_up(BOOT_PARAMS_SIZE + len(raw_cmdline), 16)
    efi_memmap_at = 0
    if efi is not None:
        efi_memmap_at = pos
        pos = align_up(pos + len(efi.memmap), 16)
        nodes.append(SetupData(SETUP_EFI, efi.setup_data))
    node_addrs = []
    for node in nodes:
        node_addrs.append(base + pos)
        pos = align_up(pos + SETUP_DATA_HEADER.size + len(node.data), 16)
    first_node = node_addrs[0] if node_addrs else 0

    zp = bytearray(BOOT_PARAMS_SIZE)
    zp[BP_SCREEN_INFO:BP_SCREEN_INFO + SCREEN_INFO_SIZE] = running_screen_info[:SCREEN_INFO_SIZE]
    struct.pack_into("<Q", zp, BP_ACPI_RSDP_ADDR, acpi_rsdp_addr)
    hdr = SetupHeader.unpack(image.raw_setup_header.ljust(0x7B, b"\0"), 0)
    hdr.type_of_loader = LOADER_TYPE_UNDEFINED
    hdr.code32_start = kernel_addr & 0xFFFFFFFF
    hdr.cmd_line_ptr = cmdline_addr & 0xFFFFFFFF
    hdr.ramdisk_image = (initrd.start & 0xFFFFFFFF) if initrd else 0
    hdr.ramdisk_size = (initrd.size & 0xFFFFFFFF) if initrd else 0
    hdr.setup_data = first_node
    packed = hdr.pack()[:len(image.raw_setup_header)]   # only the part this kernel's header defines
    zp[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(packed)] = packed
    struct.pack_into("<I", zp, BP_EXT_CMD_LINE_PTR, cmdline_addr >> 32)
    if initrd:
        struct.pack_into("<II", zp, BP_EXT_RAMDISK_IMAGE, initrd.start >> 32, initrd.size >> 32)
    if efi is not None:
        zp[BP_EFI_INFO:BP_EFI_INFO + 32] = efi.efi_info(base + efi_memmap_at)
        zp[BP_SECURE_BOOT] = efi.secure_boot
    zp[BP_SENTINEL] = 0     # 0: we cleared everything we do not set (the kernel's sanitize_boot_params)
    zp[BP_E820_ENTRIES] = len(e820)
    for i, entry in enumerate(e820):
        BOOT_E820_ENTRY.pack_into(zp, BP_E820_TABLE + i * BOOT_E820_ENTRY.size, entry.range.start,
                                  entry.range.size, entry.type)

    blob += zp + raw_cmdline
    if efi is not None:
        blob += bytes(efi_memmap_at - len(blob)) + efi.memmap
    for i, node in enumerate(nodes):
        blob += bytes(node_addrs[i] - base - len(blob))
        nxt = node_addrs[i + 1] if i + 1 < len(nodes) else 0
        blob += SETUP_DATA_HEADER.pack(nxt, node.type, len(node.data)) + node.data
    return bytes(blob)


def parse_zero_page_e820(zero_page: bytes) -> list[E820Entry]:
    """The e820 table of a zero page (ours, or sys/kernel/boot_params/data): for tests and dry-run output."""
    n = zero_page[BP_E820_ENTRIES]
    out = []
    for i in range(min(n, E820_MAX_ENTRIES_ZEROPAGE)):
        addr, size, typ = BOOT_E820_ENTRY.unpack_from(zero_page, BP_E820_TABLE + i * BOOT_E820_ENTRY.size)
        out.append(E820Entry(Range(addr, addr + size), typ))
    return out


from kexecfw.plugins.x86_64.efi import EfiHandover  # noqa: E402  (annotation; efi.py imports running.py only)
