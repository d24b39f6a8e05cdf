"""The compressed vmlinux inside a bzImage, and the kernel's own purgatory inside that.

kexec_file_load runs the purgatory the kernel carries (arch/x86/purgatory/,
embedded raw as ``kexec_purgatory`` by kexec-purgatory.S). Its size decides
where the kernel puts the other segments, so a file-load prediction digs it
out: decompress the payload (setup_header.payload_offset/length, boot.rst
"payload_offset"), then find the one x86_64 ET_REL ELF in it.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import struct

from kexecfw.errors import BadInputError

from kexecfw.plugins.x86_64.bzimage import BzImage

LZ4_LEGACY_MAGIC = 0x184C2102        # lib/decompress_unlz4.c: the legacy frame the kernel build writes
LZ4_LEGACY_BLOCK = 8 << 20
ELF64_LE = b"\x7fELF\x02\x01\x01"
ET_REL = 1
EM_X86_64 = 62


def _unlz4_legacy(data: bytes) -> bytes:
    try:
        import lz4.block
    except ImportError:
        raise BadInputError("this kernel's payload is LZ4-compressed; install the 'lz4' Python package") from None
    out: list[bytes] = []
    pos = 4
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        if size == LZ4_LEGACY_MAGIC:        # frames may be concatenated
            pos += 4
            continue
        if pos + 4 + size > len(data):
            break                           # the trailing 4 bytes are the decompressed size
        out.append(lz4.block.decompress(data[pos + 4:pos + 4 + size], uncompressed_size=LZ4_LEGACY_BLOCK))
        pos += 4 + size
    return b"".join(out)


def decompress_payload(image: BzImage) -> bytes:
    """The vmlinux ELF the bzImage's decompressor would unpack."""
    h = image.header
    data = image.kernel[h.payload_offset:h.payload_offset + h.payload_length]
    try:
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        if data[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(data, format=lzma.FORMAT_XZ)
        if data[:3] == b"BZh":
            return bz2.decompress(data)
        if data[:4] == b"\x28\xb5\x2f\xfd":
            import zstandard
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if len(data) >= 4 and struct.unpack_from("<I", data)[0] == LZ4_LEGACY_MAGIC:
            return _unlz4_legacy(data)
        if data[:3] == b"\x5d\x00\x00":
            return lzma.decompress(data, format=lzma.FORMAT_ALONE)
    except (OSError, EOFError, lzma.LZMAError, ValueError, RuntimeError) as e:
        raise BadInputError(f"cannot decompress the kernel payload: {e}") from None
    raise BadInputError(f"unknown kernel payload compression (starts with {data[:6].hex()})")


def embedded_purgatory(vmlinux: bytes) -> bytes | None:
    """The kernel's purgatory.ro (the only relocatable x86_64 ELF inside vmlinux), or None."""
    at = vmlinux.find(ELF64_LE)
    while at >= 0:
        e_type, e_machine = struct.unpack_from("<HH", vmlinux, at + 16)
        if e_type == ET_REL and e_machine == EM_X86_64:
            (shoff,) = struct.unpack_from("<Q", vmlinux, at + 0x28)
            shentsize, shnum = struct.unpack_from("<HH", vmlinux, at + 0x3A)
            end = at + shoff + shentsize * shnum          # ld puts the section headers last
            if shentsize == 64 and end <= len(vmlinux):
                return vmlinux[at:end]
        at = vmlinux.find(ELF64_LE, at + 1)
    return None
