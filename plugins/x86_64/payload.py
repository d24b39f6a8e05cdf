"""The compressed vmlinux inside a bzImage, and the kernel's own purgatory inside that.

kexec_file_load runs the purgatory the kernel carries (arch/x86/purgatory/,
embedded raw as ``kexec_purgatory`` by kexec-purgatory.S). Its size decides
where the kernel puts the other segments, so a file-load prediction digs it
out: decompress the payload (setup_header.payload_offset/length, boot.rst
"payload_offset"), then find the one x86_64 ET_REL ELF in it.
"""
from __future__ import annotations

import struct

from kexecfw.decompress import KERNEL_IMAGE_CAP, decompress, sniff
from kexecfw.errors import BadInputError

from kexecfw.plugins.x86_64.bzimage import BzImage
from kexecfw.plugins.x86_64.capture import EM_X86_64

ELF64_LE = b"\x7fELF\x02\x01\x01"
ET_REL = 1


def decompress_payload(image: BzImage) -> bytes:
    """The vmlinux ELF the bzImage's decompressor would unpack (at most KERNEL_IMAGE_CAP bytes)."""
    h = image.header
    # bytes: image.kernel is a view of the file (parse_bzimage) and the decompressors want bytes
    data = bytes(image.kernel[h.payload_offset:h.payload_offset + h.payload_length])
    codec = sniff(data)
    if codec is None:
        raise BadInputError(f"unknown kernel payload compression (starts with {data[:6].hex()})")
    return decompress(data, codec, KERNEL_IMAGE_CAP, "the kernel's payload")


def embedded_purgatory(vmlinux: bytes) -> bytes | None:
    """The kernel's purgatory.ro (the only relocatable x86_64 ELF inside vmlinux), or None."""
    at = vmlinux.find(ELF64_LE)
    while 0 <= at <= len(vmlinux) - 64:         # a whole Elf64_Ehdr
        e_type, e_machine = struct.unpack_from("<HH", vmlinux, at + 16)
        if e_type == ET_REL and e_machine == EM_X86_64:
            (shoff,) = struct.unpack_from("<Q", vmlinux, at + 0x28)
            shentsize, shnum = struct.unpack_from("<HH", vmlinux, at + 0x3A)
            end = at + shoff + shentsize * shnum          # ld puts the section headers last
            if shentsize == 64 and end <= len(vmlinux):
                return vmlinux[at:end]
        at = vmlinux.find(ELF64_LE, at + 1)
    return None
