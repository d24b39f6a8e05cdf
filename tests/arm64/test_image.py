"""Probing arm64 kernel files: the real Debian 6.1 Image, and wrappers made here around it."""
from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard

from kexecfw.errors import BadInputError
from kexecfw.model import KernelFile, LoadContext, LoadOptions
from kexecfw.pluginmanager import Hooks, new_plugin_manager
from kexecfw.plugins.arm64 import ARCH
from kexecfw.plugins.arm64.image import (ARM64_IMAGE_HEADER, check_loadable, is_uki, parse_image_header,
                                          unwrap)
from kexecfw.sysroot import Sysroot
from tests.arm64.conftest import need_tool

FLAGS_AT = 24       # struct arm64_image_header.flags
# image_size of the Debian kernels the lab gets: 6.1 as kexec-tools printed it for the fixtures' kernel,
# Debian 13's 6.12 read off its header with `od`. A kernel of another release is only checked for range.
KNOWN_IMAGE_SIZES = {"vmlinuz-6.1.0-56-arm64": 0x2010000, "vmlinuz-6.12.118+deb13-arm64": 0x2510000}


def probe(data: bytes, sysroot: Path, name: str = "Image"):
    hooks = Hooks(new_plugin_manager(entry_points=False))
    ctx = LoadContext(arch=ARCH, sysroot=Sysroot(sysroot), options=LoadOptions(kernel=Path(name)), hooks=hooks)
    return hooks.probe_kernel(ctx, KernelFile(Path(name), data))


def with_flags(image: bytes, flags: int) -> bytes:
    return image[:FLAGS_AT] + struct.pack("<Q", flags) + image[FLAGS_AT + 8:]


def zboot(payload: bytes, comp: str) -> bytes:
    """An EFI zboot file laid out as drivers/firmware/efi/libstub/zboot-header.S does (PE parts left out)."""
    header = bytearray(0x200)
    struct.pack_into("<I4sII", header, 0, 0x5A4D, b"zimg", len(header), len(payload))
    header[0x18:0x18 + len(comp) + 1] = comp.encode() + b"\0"
    return bytes(header) + payload


def test_real_debian_image_header(arm64_image: Path, arm64_image_bytes: bytes) -> None:
    h = parse_image_header(arm64_image_bytes)
    assert h is not None
    # kexec-tools on the fixtures' kernel: text_offset 0, image_size 0x2010000, "PE format: yes"
    assert (h.text_offset, h.page_size, h.big_endian, h.efi_stub) == (0, 4096, False, True)
    assert h.image_size == KNOWN_IMAGE_SIZES.get(arm64_image.name, h.image_size)
    assert h.placement_anywhere


def test_probe_real_images_of_both_generations(any_arm64_image: Path, arm64_sysroot: Path) -> None:
    data = any_arm64_image.read_bytes()
    kernel = probe(data, arm64_sysroot)
    assert kernel.format == "arm64 Image"
    assert kernel.payload == data
    d = kernel.details
    assert (d["text_offset"], d["page_size"], d["efi_stub"]) == (0, 4096, True)
    assert len(data) < d["image_size"] < len(data) + (16 << 20)     # BSS and early page tables beyond the file
    assert d["image_size"] == KNOWN_IMAGE_SIZES.get(any_arm64_image.name, d["image_size"])


def test_gzip_image(arm64_image_bytes: bytes, arm64_sysroot: Path) -> None:
    kernel = probe(gzip.compress(arm64_image_bytes, compresslevel=1), arm64_sysroot)
    assert kernel.format == "gzip arm64 Image"
    assert kernel.payload == arm64_image_bytes


@pytest.mark.parametrize("comp", ["gzip", "zstd22"])
def test_efi_zboot_is_unwrapped(arm64_image_bytes: bytes, comp: str) -> None:
    payload = (gzip.compress(arm64_image_bytes, compresslevel=1) if comp == "gzip"
               else zstandard.ZstdCompressor(level=1).compress(arm64_image_bytes))
    probed = unwrap(zboot(payload, comp), "vmlinuz.efi")
    assert probed is not None and probed.format == f"EFI zboot ({comp}) arm64 Image"
    assert probed.payload == arm64_image_bytes


def test_efi_zboot_with_unsupported_compression(arm64_image_bytes: bytes) -> None:
    with pytest.raises(BadInputError, match="compressed with 'lz4'"):
        unwrap(zboot(b"\x04\x22\x4d\x18" + bytes(64), "lz4"), "vmlinuz.efi")


def test_vmlinux_elf_made_by_the_linker(arm64_image_bytes: bytes, tmp_path: Path) -> None:
    """A vmlinux-like ELF: the Image linked at the kernel's link address by aarch64 ld."""
    ld = need_tool("aarch64-linux-gnu-ld")
    (tmp_path / "Image").write_bytes(arm64_image_bytes)
    subprocess.run([ld, "-o", "vmlinux", "-e", "0xffff800008000000", "-Tdata", "0xffff800008000000",
                    "-b", "binary", "Image"], cwd=tmp_path, check=True, capture_output=True)
    vmlinux = (tmp_path / "vmlinux").read_bytes()
    probed = unwrap(vmlinux, "vmlinux")
    assert probed is not None and probed.format == "vmlinux ELF"
    assert probed.payload == arm64_image_bytes
    for cut in (70, 100, 4096):         # headers or data cut off: one clear error each
        with pytest.raises(BadInputError, match="truncated"):
            unwrap(vmlinux[:cut], "vmlinux")


def test_other_architectures_are_not_ours(arm64_sysroot: Path, tmp_path: Path) -> None:
    gcc = need_tool("gcc")
    (tmp_path / "x.c").write_text("int main(void) { return 0; }\n")
    subprocess.run([gcc, "-o", "x", "x.c"], cwd=tmp_path, check=True)
    assert probe((tmp_path / "x").read_bytes(), arm64_sysroot) is None       # an x86-64 ELF
    assert probe(b"\x4d\x5a" + bytes(0x3fe), arm64_sysroot) is None         # some PE file
    assert probe(b"\x00" * 4096, arm64_sysroot) is None


def test_big_endian_image_is_refused(arm64_image_bytes: bytes, arm64_sysroot: Path) -> None:
    h = parse_image_header(arm64_image_bytes)
    head = with_flags(arm64_image_bytes[:4096], h.flags | 1)
    with pytest.raises(BadInputError, match="big-endian"):
        probe(head, arm64_sysroot)


def test_other_page_size_is_refused(arm64_image_bytes: bytes, arm64_sysroot: Path) -> None:
    h = parse_image_header(arm64_image_bytes)
    head = with_flags(arm64_image_bytes[:4096], (h.flags & ~0x6) | (3 << 1))   # 64K pages
    with pytest.raises(BadInputError, match="64 KiB pages but the running kernel uses 4 KiB"):
        probe(head, arm64_sysroot)


def test_pre_3_17_image_without_size_is_refused(arm64_image_bytes: bytes) -> None:
    fields = list(ARM64_IMAGE_HEADER.unpack_from(arm64_image_bytes))
    fields[3] = 0    # image_size
    old = ARM64_IMAGE_HEADER.pack(*fields)
    with pytest.raises(BadInputError, match="image_size 0"):
        check_loadable(parse_image_header(old), "Image", 4096)


def test_uki_is_named(arm64_sysroot: Path) -> None:
    """A minimal PE file with a .linux section, the way systemd's ukify lays one out."""
    pe = bytearray(0x400)
    pe[0:2] = b"MZ"
    struct.pack_into("<I", pe, 0x3C, 0x80)
    pe[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", pe, 0x84, 0xAA64, 2, 0, 0, 0, 0xF0, 0x22)
    table = 0x80 + 24 + 0xF0
    pe[table:table + 8] = b".osrel\0\0"
    pe[table + 40:table + 48] = b".linux\0\0"
    assert is_uki(bytes(pe))
    with pytest.raises(BadInputError, match="Unified Kernel Image"):
        probe(bytes(pe), arm64_sysroot)
    assert not is_uki(bytes(pe[:0x100]))                 # truncated section table
    assert not is_uki(b"MZ" + bytes(0x3A) + b"\xff\xff\xff\x7f")   # PE header offset past the end


def test_truncated_gzip(arm64_image_bytes: bytes) -> None:
    data = gzip.compress(arm64_image_bytes[:1 << 20], compresslevel=1)
    with pytest.raises(BadInputError, match="truncated"):
        unwrap(data[: len(data) // 2], "Image.gz")


@pytest.mark.parametrize("field,value,words", [
    (3, 1 << 40, "image_size 0x10000000000 in its header is more than a kernel takes"),
    (2, 1 << 40, "text_offset 0x10000000000 is not a plausible page-aligned offset"),
    (2, 0x123, "text_offset 0x123 is not a plausible page-aligned offset"),
])
def test_sizes_beyond_any_kernel_are_refused(arm64_image_bytes: bytes, field: int, value: int, words: str) -> None:
    """The checks arm64 shares with riscv64 (kexecfw.flatimage): a corrupt header is refused at probe time,
    not planned until the placement finds no hole that large."""
    fields = list(ARM64_IMAGE_HEADER.unpack_from(arm64_image_bytes))
    fields[field] = value
    with pytest.raises(BadInputError, match=words):
        check_loadable(parse_image_header(ARM64_IMAGE_HEADER.pack(*fields)), "Image", 4096)
