"""The bzImage setup header: parse it and say whether kexec can load the image.

Layout: ``struct setup_header`` in arch/x86/include/uapi/asm/bootparam.h, at
offset 0x1f1 of the image (and of ``struct boot_params``); field meanings and
the protocol versions that introduced them: Documentation/arch/x86/boot.rst.
"""
from __future__ import annotations

import struct
from typing import Any

from kexecfw.errors import BadInputError
from kexecfw.records import Record

SETUP_HEADER_OFFSET = 0x1F1
HDRS_MAGIC = 0x53726448          # "HdrS" at 0x202
BOOT_FLAG = 0xAA55               # at 0x1fe
MIN_PROTOCOL = 0x020C            # 2.12: xloadflags, needed for a 64-bit entry above 4 GiB
SECTOR = 512
ENTRY64_OFFSET = 0x200           # startup_64 is 0x200 past the protected-mode kernel's start (boot.rst)

# loadflags (bootparam.h)
LOADED_HIGH = 1 << 0
KASLR_FLAG = 1 << 1
QUIET_FLAG = 1 << 5
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7

# xloadflags (bootparam.h)
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
XLF_EFI_HANDOVER_32 = 1 << 2
XLF_EFI_HANDOVER_64 = 1 << 3
XLF_EFI_KEXEC = 1 << 4
XLF_5LEVEL = 1 << 5
XLF_5LEVEL_ENABLED = 1 << 6

_XLF_NAMES = {XLF_KERNEL_64: "KERNEL_64", XLF_CAN_BE_LOADED_ABOVE_4G: "CAN_BE_LOADED_ABOVE_4G",
              XLF_EFI_HANDOVER_32: "EFI_HANDOVER_32", XLF_EFI_HANDOVER_64: "EFI_HANDOVER_64",
              XLF_EFI_KEXEC: "EFI_KEXEC", XLF_5LEVEL: "5LEVEL", XLF_5LEVEL_ENABLED: "5LEVEL_ENABLED"}

# struct setup_header, packed, little-endian; one code per field in declaration order.
SETUP_HEADER = struct.Struct(
    "<"
    "B"   # setup_sects
    "H"   # root_flags
    "I"   # syssize
    "H"   # ram_size
    "H"   # vid_mode
    "H"   # root_dev
    "H"   # boot_flag          0x1fe
    "H"   # jump               0x200
    "I"   # header             0x202
    "H"   # version            0x206
    "I"   # realmode_swtch
    "H"   # start_sys_seg
    "H"   # kernel_version     0x20e
    "B"   # type_of_loader     0x210
    "B"   # loadflags          0x211
    "H"   # setup_move_size
    "I"   # code32_start       0x214
    "I"   # ramdisk_image      0x218
    "I"   # ramdisk_size       0x21c
    "I"   # bootsect_kludge
    "H"   # heap_end_ptr       0x224
    "B"   # ext_loader_ver
    "B"   # ext_loader_type
    "I"   # cmd_line_ptr       0x228
    "I"   # initrd_addr_max    0x22c
    "I"   # kernel_alignment   0x230
    "B"   # relocatable_kernel 0x234
    "B"   # min_alignment
    "H"   # xloadflags         0x236
    "I"   # cmdline_size       0x238
    "I"   # hardware_subarch
    "Q"   # hardware_subarch_data
    "I"   # payload_offset     0x248
    "I"   # payload_length
    "Q"   # setup_data         0x250
    "Q"   # pref_address       0x258
    "I"   # init_size          0x260
    "I"   # handover_offset
    "I"   # kernel_info_offset 0x268
)
assert SETUP_HEADER.size == 0x26C - SETUP_HEADER_OFFSET


class SetupHeader(Record):
    """``struct setup_header`` field by field (names as in bootparam.h)."""

    setup_sects: int
    root_flags: int
    syssize: int
    ram_size: int
    vid_mode: int
    root_dev: int
    boot_flag: int
    jump: int
    header: int
    version: int
    realmode_swtch: int
    start_sys_seg: int
    kernel_version: int
    type_of_loader: int
    loadflags: int
    setup_move_size: int
    code32_start: int
    ramdisk_image: int
    ramdisk_size: int
    bootsect_kludge: int
    heap_end_ptr: int
    ext_loader_ver: int
    ext_loader_type: int
    cmd_line_ptr: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable_kernel: int
    min_alignment: int
    xloadflags: int
    cmdline_size: int
    hardware_subarch: int
    hardware_subarch_data: int
    payload_offset: int
    payload_length: int
    setup_data: int
    pref_address: int
    init_size: int
    handover_offset: int
    kernel_info_offset: int

    @classmethod
    def unpack(cls, data: bytes, offset: int = SETUP_HEADER_OFFSET) -> "SetupHeader":
        return cls(*SETUP_HEADER.unpack_from(data, offset))

    def pack(self) -> bytes:
        return SETUP_HEADER.pack(*self._values())


class BzImage(Record):
    """A parsed bzImage: its setup header and the two parts kexec loads separately."""

    header: SetupHeader
    setup_size: int         # real-mode part: (setup_sects + 1) * 512 bytes
    header_end: int         # the setup header ends at 0x202 + the byte at 0x201 (boot.rst)
    raw_setup_header: bytes  # bytes 0x1f1..header_end of the image, copied into boot_params
    kernel: bytes           # the protected-mode kernel (loaded at a kernel_alignment boundary)
    version_string: str

    @property
    def protocol(self) -> str:
        return f"{self.header.version >> 8}.{self.header.version & 0xff:02d}"

    @property
    def entry64_offset(self) -> int:
        return ENTRY64_OFFSET

    @property
    def supports_5level(self) -> bool:
        return bool(self.header.xloadflags & XLF_5LEVEL)

    def xloadflag_names(self) -> list[str]:
        return [name for bit, name in _XLF_NAMES.items() if self.header.xloadflags & bit]

    def details(self) -> dict[str, Any]:
        h = self.header
        return {
            "protocol": self.protocol,
            "version": self.version_string,
            "setup_sects": h.setup_sects,
            "setup_size": f"{self.setup_size:#x}",
            "kernel_size": f"{len(self.kernel):#x}",
            "init_size": f"{h.init_size:#x}",
            "kernel_alignment": f"{h.kernel_alignment:#x}",
            "min_alignment": f"{1 << h.min_alignment:#x}",
            "pref_address": f"{h.pref_address:#x}",
            "relocatable": bool(h.relocatable_kernel),
            "loadflags": f"{h.loadflags:#x}",
            "xloadflags": self.xloadflag_names(),
            "initrd_addr_max": f"{h.initrd_addr_max:#x}",
            "cmdline_size": h.cmdline_size,
            "payload": f"{h.payload_length:#x} bytes at {h.payload_offset:#x}",
            "handover_offset": f"{h.handover_offset:#x}",
        }


def looks_like_bzimage(data: bytes) -> bool:
    """True when ``data`` carries the boot-protocol magic ("HdrS" at 0x202)."""
    return len(data) >= 0x206 and struct.unpack_from("<I", data, 0x202)[0] == HDRS_MAGIC


def parse_bzimage(data: bytes, name: str = "kernel") -> BzImage:
    """Parse and check a bzImage for a 64-bit kexec; raise BadInputError saying why it cannot load."""
    if not looks_like_bzimage(data):
        raise BadInputError(f"{name} is not an x86 bzImage (no 'HdrS' boot-protocol magic at 0x202)")
    if len(data) < SETUP_HEADER_OFFSET + SETUP_HEADER.size:
        raise BadInputError(f"{name} is truncated: its setup header ends past the file's {len(data)} bytes")
    h = SetupHeader.unpack(data)
    if h.boot_flag != BOOT_FLAG:
        raise BadInputError(f"{name}: boot sector signature is {h.boot_flag:#06x}, not 0xaa55; "
                            "the image is damaged")
    if h.version < MIN_PROTOCOL:
        raise BadInputError(f"{name} speaks boot protocol {h.version >> 8}.{h.version & 0xff:02d}; kexec needs "
                            "2.12 or later (Linux 3.8+): use a newer kernel")
    if not h.loadflags & LOADED_HIGH:
        raise BadInputError(f"{name} is a zImage that must load at 0x10000 (LOADED_HIGH clear): "
                            "build the kernel as a bzImage")
    if not h.xloadflags & XLF_KERNEL_64:
        raise BadInputError(f"{name} has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64): "
                            "it is a 32-bit kernel; load an x86_64 kernel")
    if not h.relocatable_kernel:
        raise BadInputError(f"{name} is not relocatable (CONFIG_RELOCATABLE=n); kexec cannot place it: "
                            "build it with CONFIG_RELOCATABLE=y")
    setup_sects = h.setup_sects or 4        # boot.rst: 0 means 4
    setup_size = (setup_sects + 1) * SECTOR
    if setup_size >= len(data):
        raise BadInputError(f"{name} is truncated: {setup_sects} setup sectors but only {len(data)} bytes")
    if h.init_size == 0 or h.kernel_alignment == 0 or h.kernel_alignment & (h.kernel_alignment - 1):
        raise BadInputError(f"{name}: setup header has init_size {h.init_size:#x} and kernel_alignment "
                            f"{h.kernel_alignment:#x}; the image is damaged")
    header_end = 0x202 + data[0x201]
    version = ""
    if h.kernel_version:
        at = h.kernel_version + 0x200
        version = bytes(data[at:at + 256]).split(b"\0", 1)[0].decode("ascii", "replace")
    # the protected-mode kernel as a view of the file, not a copy of its 10+ MiB (a load maps the file)
    return BzImage(h, setup_size, header_end, bytes(data[SETUP_HEADER_OFFSET:header_end]),
                   memoryview(data)[setup_size:], version)


def kernel_release(version_string: str) -> tuple[int, ...] | None:
    """(major, minor) from the image's version string ("6.1.0-56-cloud-amd64 (...) #1 SMP ...")."""
    head = version_string.split(" ", 1)[0]
    parts: list[int] = []
    for piece in head.split("-", 1)[0].split(".")[:2]:
        if not piece.isdigit():
            return None
        parts.append(int(piece))
    return tuple(parts) if len(parts) == 2 else None
