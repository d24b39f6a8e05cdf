"""Recognise a riscv64 kernel file: the flat Image (with or without its EFI stub) or a gzip'd one.

The header is ``struct riscv_image_header`` from arch/riscv/include/asm/image.h
(Documentation/arch/riscv/boot-image-header.rst), 64 bytes, little-endian::

    u32 code0, code1; u64 text_offset, image_size, flags; u32 version, res1; u64 res2;
    u64 magic ("RISCV\\0\\0\\0", deprecated); u32 magic2 ("RSC\\x05"); u32 res3 (PE header offset)

An EFI-stub kernel (Debian's) starts with "MZ" in code0; the header is the same.
"""
from __future__ import annotations

import struct

from kexecfw.elfnotes import ELFMAG
from kexecfw.errors import BadInputError
from kexecfw.flatimage import GZIP_MAGIC, ImageHeader, ProbedImage, check_header, open_image
from kexecfw.plugins.riscv64.capture import EM_RISCV


RISCV_IMAGE_HEADER = struct.Struct("<IIQQQIIQQII")
assert RISCV_IMAGE_HEADER.size == 64
RISCV_IMAGE_MAGIC = int.from_bytes(b"RISCV\0\0\0", "little")
RISCV_IMAGE_MAGIC2 = int.from_bytes(b"RSC\x05", "little")
# version = major << 16 | minor; 0.1 added image_size and flags, 0.2 magic2 and res3 (PE offset)
RISCV_HEADER_VERSION_MAJOR = 0
RISCV_HEADER_MIN_MINOR = 1
# drivers/firmware/efi/libstub/zboot-header.S: "MZ", then "zimg" at offset 4
ZBOOT_KIND = b"zimg"


class RiscvImageHeader(ImageHeader):
    """pe_header is res3."""

    version: int = 0        # major << 16 | minor

    @property
    def version_text(self) -> str:
        return f"{self.version >> 16}.{self.version & 0xFFFF}"


def parse_image_header(data: bytes) -> RiscvImageHeader | None:
    """The header of a flat riscv Image, or None when ``data`` has neither magic at 0x30/0x38."""
    if len(data) < RISCV_IMAGE_HEADER.size:
        return None
    (_, _, text_offset, image_size, flags, version, _, _, magic, magic2,
     res3) = RISCV_IMAGE_HEADER.unpack_from(data)
    if magic2 != RISCV_IMAGE_MAGIC2 and magic != RISCV_IMAGE_MAGIC:
        return None
    return RiscvImageHeader(text_offset, image_size, flags, pe_header=res3, version=version)


def _elf_machine(data: bytes) -> int | None:
    if len(data) < 20 or data[:4] != ELFMAG:
        return None
    return int.from_bytes(data[18:20], "big" if data[5] == 2 else "little")


def unwrap(data: bytes, what: str) -> ProbedImage[RiscvImageHeader] | None:
    """Open ``data`` down to a flat Image; None if it is not a riscv kernel in a form we know.

    Raises for riscv kernels kexecfw recognises but cannot load (vmlinux ELF, EFI zboot)."""
    probed = open_image(data, what, parse_image_header, "riscv64")
    if probed is not None or data[:2] == GZIP_MAGIC:
        return probed
    if data[:2] == b"MZ" and data[4:8] == ZBOOT_KIND:
        raise BadInputError(f"{what} is an EFI zboot image (CONFIG_EFI_ZBOOT); kexecfw loads the flat "
                            "riscv Image: pass arch/riscv/boot/Image (or Image.gz) of the same build")
    if _elf_machine(data) == EM_RISCV:
        raise BadInputError(f"{what} is a riscv vmlinux ELF file; kexec_load takes the flat Image: "
                            "pass arch/riscv/boot/Image (objcopy -O binary of it is the same)")
    return None


def check_loadable(header: RiscvImageHeader, what: str) -> None:
    """What kexecfw needs of the header to place the kernel (arch/riscv/include/asm/image.h)."""
    check_header(header, what, "riscv")
    major, minor = header.version >> 16, header.version & 0xFFFF
    if major != RISCV_HEADER_VERSION_MAJOR or minor < RISCV_HEADER_MIN_MINOR:
        raise BadInputError(f"{what} has riscv Image header version {header.version_text}; kexecfw knows "
                            f"0.{RISCV_HEADER_MIN_MINOR} to 0.x (image_size and flags are defined from 0.1): "
                            "the header is corrupt or from an unknown future format")
