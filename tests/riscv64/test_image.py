"""riscv64 Image probing: Debian 13's real header, and each refusal from a mutated copy of it."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from kexecfw.errors import BadInputError
from kexecfw.load import plan_load
from kexecfw.model import LoadOptions
from kexecfw.plugins.riscv64.image import parse_image_header, unwrap
from tests.riscv64.conftest import IMAGE_SIZE, TEXT_OFFSET


def test_debian_header(image_head):
    h = parse_image_header(image_head)
    assert (h.text_offset, h.image_size, h.flags, h.version_text, h.efi_stub) == (TEXT_OFFSET, IMAGE_SIZE, 0, "0.2", True)
    assert image_head[:2] == b"MZ"


def test_gzip_image(image_head):
    probed = unwrap(gzip.compress(image_head), "Image.gz")
    assert probed.format == "gzip riscv64 Image" and probed.payload == image_head


def _patched(head: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(head)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("offset,fmt,value,words", [
    (24, "<Q", 1, "big-endian"),                        # flags bit 0
    (32, "<I", 1 << 16, "header version 1.0"),          # an unknown major version
    (32, "<I", 0, "header version 0.0"),
    (16, "<Q", 0, "image_size 0"),
    (16, "<Q", 1 << 40, "is more than a kernel takes"),
    (8, "<Q", 0x123, "text_offset 0x123"),
])
def test_refusals(snapshot, kernel_file: Path, offset, fmt, value, words):
    kernel_file.write_bytes(_patched(kernel_file.read_bytes(), offset, fmt, value))
    with pytest.raises(BadInputError, match=words):
        plan_load(LoadOptions(kernel=kernel_file, panic=True), snapshot)


def test_bad_magic_is_not_ours(snapshot, kernel_file: Path):
    data = _patched(_patched(kernel_file.read_bytes(), 48, "<Q", 0), 56, "<I", 0)
    kernel_file.write_bytes(data)
    with pytest.raises(BadInputError, match="not a kernel image the riscv64 plugin can load"):
        plan_load(LoadOptions(kernel=kernel_file, panic=True), snapshot)


def test_deprecated_magic_alone_is_enough(image_head):
    assert parse_image_header(_patched(image_head, 56, "<I", 0)).image_size == IMAGE_SIZE


@pytest.mark.parametrize("data,words", [
    (b"MZ\0\0zimg" + bytes(64), "EFI zboot image"),
    (b"\x7fELF\x02\x01\x01" + bytes(11) + (243).to_bytes(2, "little") + bytes(44), "riscv vmlinux ELF"),
])
def test_wrappers_we_cannot_load(data, words):
    with pytest.raises(BadInputError, match=words):
        unwrap(data, "k")
