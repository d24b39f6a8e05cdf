"""The riscv64 guest of a lab run (Debian 13, 6.12.118, QEMU virt, 2 harts, 1 GiB, crashkernel=256M):
its snapshot and the first 4 KiB of its kernel Image (the header; the rest is zeros here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kexecfw.sysroot import Sysroot
from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "riscv64-guest"
IMAGE_SIZE = 0x1E6C000
TEXT_OFFSET = 0x200000


@pytest.fixture
def snapshot() -> Sysroot:
    return Sysroot(DATA / "snapshot")


@pytest.fixture
def image_head() -> bytes:
    return (DATA / "Image-head.bin").read_bytes()


@pytest.fixture
def kernel_file(tmp_path: Path, image_head: bytes) -> Path:
    """The real header padded to 1 MiB: a loadable stand-in for the 30 MiB Image."""
    path = tmp_path / "Image"
    path.write_bytes(image_head + bytes((1 << 20) - len(image_head)))
    return path
