"""Setup-header parsing on real Debian bzImages, and the refusals on images made unloadable from them."""
from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from kexecfw.errors import BadInputError
from kexecfw.plugins.x86_64.payload import decompress_payload, embedded_purgatory
from kexecfw.purgatory import PurgatoryLayout
from kexecfw.plugins.x86_64.bzimage import (SETUP_HEADER, SETUP_HEADER_OFFSET, XLF_5LEVEL, XLF_KERNEL_64,
                                            kernel_release, parse_bzimage)


def test_every_cached_bzimage_parses(bzimages: list[Path]) -> None:
    for path in bzimages:
        data = path.read_bytes()
        image = parse_bzimage(data, str(path))
        h = image.header
        assert h.version >= 0x020C
        assert h.xloadflags & XLF_KERNEL_64
        # setup + protected-mode kernel are the whole file
        assert image.setup_size + len(image.kernel) == len(data)
        assert image.setup_size == (h.setup_sects + 1) * 512
        # the version string is the release in the file name (the lab's copies are plain "vmlinuz")
        release = path.name.removeprefix("vmlinuz-") if path.name != "vmlinuz" else image.version_string.split()[0]
        assert image.version_string.startswith(release)
        assert kernel_release(image.version_string) == tuple(int(x) for x in release.split("-")[0].split(".")[:2])
        # the kernel's own purgatory is inside (what kexec_file_load runs; its size places the segments)
        obj = embedded_purgatory(decompress_payload(image))
        assert obj is not None, f"{path}: no purgatory in the payload"
        elf = PurgatoryLayout(obj, 62).elf
        symbols = {s.name for s in elf.symbols(elf.symtab())}
        assert {"purgatory_start", "entry64_regs"} <= symbols
        # the raw header ends where the jump at 0x200 says (boot.rst), and round-trips through the struct
        assert image.header_end == 0x202 + data[0x201]
        assert h.pack()[:len(image.raw_setup_header)] == image.raw_setup_header
        assert h.kernel_alignment & (h.kernel_alignment - 1) == 0
        assert h.init_size >= len(image.kernel)


def test_fixture_kernel_matches_kexec_tools(fixture_bzimage: Path, kexec_tools_debug: str) -> None:
    """kexec-tools printed this very kernel's sizes when it loaded it in the fixture guest."""
    data = fixture_bzimage.read_bytes()
    image = parse_bzimage(data)
    total = int(re.search(r"kernel_size: (0x[0-9a-f]+)", kexec_tools_debug).group(1), 16)
    init_size = int(re.search(r"kernel init_size (0x[0-9a-f]+)", kexec_tools_debug).group(1), 16)
    assert len(data) == total
    assert image.header.init_size == init_size
    # segment[2] is the kernel: bufsz = file minus setup, memsz = init_size
    seg = re.search(r"segment\[2\]\.bufsz = (0x[0-9a-f]+)\nsegment\[2\]\.mem   = (0x[0-9a-f]+)\n"
                    r"segment\[2\]\.memsz = (0x[0-9a-f]+)", kexec_tools_debug)
    assert len(image.kernel) == int(seg.group(1), 16)
    assert int(seg.group(3), 16) == image.header.init_size
    assert int(seg.group(2), 16) % image.header.kernel_alignment == 0
    details = image.details()
    assert "5LEVEL" in details["xloadflags"] and "CAN_BE_LOADED_ABOVE_4G" in details["xloadflags"]


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@pytest.mark.parametrize("offset,fmt,value,message", [
    (0x202, "<I", 0x12345678, "not an x86 bzImage"),
    (0x1FE, "<H", 0x0000, "boot sector signature"),
    (0x206, "<H", 0x020A, "boot protocol 2.10"),
    (0x211, "<B", 0x00, "LOADED_HIGH"),
    (0x236, "<H", 0x0002, "XLF_KERNEL_64"),
    (0x234, "<B", 0x00, "not relocatable"),
])
def test_unloadable_images_say_why(bzimages: list[Path], offset: int, fmt: str, value: int, message: str) -> None:
    data = bzimages[0].read_bytes()
    with pytest.raises(BadInputError, match=message):
        parse_bzimage(_patched(data, offset, fmt, value), "img")


def test_truncated_image(bzimages: list[Path]) -> None:
    data = bzimages[0].read_bytes()
    with pytest.raises(BadInputError, match="truncated"):
        parse_bzimage(data[:0x1000], "img")


def test_5level_mismatch_is_refused(bzimages: list[Path], x86_sysroot: Path) -> None:
    """The fixture guest ran with 5-level paging (-cpu max): an image without XLF_5LEVEL cannot follow it."""
    from kexecfw.model import KernelFile, LoadContext, LoadOptions
    from kexecfw.plugins.x86_64 import ARCH, kexecfw_probe_kernel
    from kexecfw.sysroot import Sysroot
    data = bzimages[0].read_bytes()
    xlf = struct.unpack_from("<H", data, 0x236)[0]
    ctx = LoadContext(ARCH, Sysroot(x86_sysroot), LoadOptions(kernel=bzimages[0]))
    image = kexecfw_probe_kernel(ctx=ctx, kernel_file=KernelFile(bzimages[0], data))
    assert image is not None and image.details["running_kernel_5level"] is True
    no5 = _patched(data, 0x236, "<H", xlf & ~XLF_5LEVEL)
    ctx = LoadContext(ARCH, Sysroot(x86_sysroot), LoadOptions(kernel=bzimages[0]))
    with pytest.raises(BadInputError, match="5-level"):
        kexecfw_probe_kernel(ctx=ctx, kernel_file=KernelFile(bzimages[0], no5))


def test_not_a_bzimage_is_left_to_others(x86_sysroot: Path, tmp_path: Path) -> None:
    from kexecfw.model import KernelFile, LoadContext, LoadOptions
    from kexecfw.plugins.x86_64 import ARCH, kexecfw_probe_kernel
    from kexecfw.sysroot import Sysroot
    ctx = LoadContext(ARCH, Sysroot(x86_sysroot), LoadOptions(kernel=tmp_path / "x"))
    assert kexecfw_probe_kernel(ctx=ctx, kernel_file=KernelFile(tmp_path / "x", bytes(4096))) is None
    with pytest.raises(BadInputError, match="ELF file.*not a bzImage"):
        kexecfw_probe_kernel(ctx=ctx, kernel_file=KernelFile(tmp_path / "x", b"\x7fELF" + bytes(4092)))


def test_struct_layout_matches_bootparam_h() -> None:
    assert SETUP_HEADER_OFFSET + SETUP_HEADER.size == 0x26C
