"""Fixtures for the capture side: the real vmcores of tests/data/debian12-guests (or $KEXECFW_FIXTURES)."""
from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from tests.conftest import fixtures_dir

REPO = Path(__file__).resolve().parents[2]
ARCHES = ("arm64", "x86_64")




@pytest.fixture(scope="session")
def fixtures() -> Path:
    d = fixtures_dir()
    if d is None:
        pytest.fail("the real-guest test data is missing (tests/data/debian12-guests, or $KEXECFW_FIXTURES)")
    return d


@pytest.fixture(scope="session")
def mini_vmcores(fixtures: Path, tmp_path_factory) -> dict[str, Path]:
    """The fixtures' vmcore-mini.elf.xz, decompressed once per session."""
    out = tmp_path_factory.mktemp("mini")
    paths = {}
    for arch in ARCHES:
        src = fixtures / arch / "capture" / "vmcore-mini.elf.xz"
        if not src.is_file():
            pytest.fail(f"test data {src} missing")
        dst = out / f"{arch}.elf"
        dst.write_bytes(lzma.decompress(src.read_bytes()))
        paths[arch] = dst
    return paths


@pytest.fixture(scope="session")
def expected_dmesg(fixtures: Path) -> dict[str, bytes]:
    return {a: (fixtures / a / "capture" / "vmcore-dmesg.txt").read_bytes() for a in ARCHES}

