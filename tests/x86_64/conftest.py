"""x86_64 test data: real Debian bzImages (from the lab, cached outside git) and the fixture guest's sysroot."""
from __future__ import annotations

from pathlib import Path

import pytest

from kexecfw.lab.errors import LabError
from kexecfw.lab.kernels import debian_kernel
from kexecfw.lab.targets import GENERATIONS
from tests.conftest import fixture_kernel, fixture_kernel_package, fixture_path

HDRS = b"HdrS"


def _is_bzimage(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0x202)
            return f.read(4) == HDRS
    except OSError:
        return False


@pytest.fixture(scope="session")
def bzimages() -> list[Path]:
    """Real x86_64 bzImages, a Debian 6.1 kernel first: the fixture guest's kernel (when the fixtures are
    here), the lab's Debian kernel of each generation, this host's /boot/vmlinuz-*."""
    fixture_package = fixture_kernel_package("x86_64")     # the fixture guests ran Debian 12
    wanted = ([("6.1", fixture_package)] if fixture_package else []) + [(g, None) for g in GENERATIONS]
    images: dict[str, Path] = {}     # by file name (vmlinuz-<release>): the fixture's is often the lab's 6.1
    missing = []
    for generation, package in wanted:
        try:
            kernel = debian_kernel("x86_64", generation, package)
        except LabError as e:
            missing.append(f"{generation}: {e}")
            continue
        images.setdefault(kernel.name, kernel)
    for kernel in sorted(Path("/boot").glob("vmlinuz-*")):
        if _is_bzimage(kernel):
            images.setdefault(kernel.name, kernel)
    if not images:
        pytest.skip(f"no real x86_64 bzImage: the lab could not get a Debian kernel ({'; '.join(missing)}) "
                    "and /boot has none")
    return list(images.values())


@pytest.fixture(scope="session")
def fixture_bzimage() -> Path:
    """The very kernel the x86_64 fixture guest ran (so kexec-tools' numbers apply)."""
    return fixture_kernel("x86_64")


@pytest.fixture(scope="session")
def x86_sysroot() -> Path:
    return fixture_path("x86_64", "sysroot")


@pytest.fixture(scope="session")
def kexec_tools_debug() -> str:
    return fixture_path("x86_64", "kexec-tools", "kexec-p-debug.txt").read_text()
