"""x86_64 test data: real Debian bzImages (cached outside git) and the fixture guest's sysroot."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import fixtures_dir

HDRS = b"HdrS"


def _is_bzimage(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0x202)
            return f.read(4) == HDRS
    except OSError:
        return False


def _cache() -> Path:
    from kexecfw.lab.cache import cache_dir
    return cache_dir()


def _fixture_kernel_package() -> str | None:
    base = fixtures_dir()
    pkg = base / "x86_64" / "kernel-package" if base else None
    return pkg.read_text().strip() if pkg and pkg.is_file() else None


def _download(package: str, dest: Path) -> None:
    """apt-get download + dpkg-deb -x into the lab cache (never into git)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return
    dl = dest / "debs"
    dl.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", package], cwd=dl, check=True, capture_output=True, timeout=300)
        for deb in dl.glob(f"{package}_*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest / "x86_64-extract")], check=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        pass


@pytest.fixture(scope="session")
def bzimages() -> list[Path]:
    """Real x86_64 bzImages: the lab cache's Debian kernels (6.1, and 6.12 once the lab fetched Debian 13's),
    this host's /boot/vmlinuz-*."""
    def found() -> list[Path]:
        cands = (sorted(_cache().glob("**/boot/vmlinuz-*")) + sorted(_cache().glob("guest/*-amd64/*/vmlinuz"))
                 + sorted(Path("/boot").glob("vmlinuz-*")))
        return [p for p in cands if "arm64" not in p.name and _is_bzimage(p)]
    images = found()
    package = _fixture_kernel_package()
    if package and not any(package.removeprefix("linux-image-") in p.name for p in images):
        _download(package, _cache())
        images = found()
    if not images:
        pytest.skip("no real x86_64 bzImage (cache a Debian linux-image-*-amd64 in ~/.cache/kexecfw-lab)")
    return images


@pytest.fixture(scope="session")
def fixture_bzimage(bzimages: list[Path]) -> Path:
    """The very kernel the x86_64 fixture guest ran (so kexec-tools' numbers apply)."""
    package = _fixture_kernel_package()
    if package is None:
        pytest.skip("x86_64 fixture not present")
    release = package.removeprefix("linux-image-")
    for p in bzimages:
        if p.name == f"vmlinuz-{release}":
            return p
    pytest.skip(f"vmlinuz-{release} is not cached")


@pytest.fixture(scope="session")
def x86_sysroot() -> Path:
    base = fixtures_dir()
    root = base / "x86_64" / "sysroot" if base else None
    if root is None or not root.is_dir():
        pytest.skip("x86_64 fixture sysroot not present")
    return root


@pytest.fixture(scope="session")
def kexec_tools_debug() -> str:
    base = fixtures_dir()
    path = base / "x86_64" / "kexec-tools" / "kexec-p-debug.txt" if base else None
    if path is None or not path.is_file():
        pytest.skip("kexec-tools debug output of the x86_64 fixture not present")
    return path.read_text()
