"""arm64 test helpers: the shared fixtures of a real Debian 6.1 arm64 guest and a real Debian arm64 kernel."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import fixture_path

# The kernel the fixtures' guest ran (fixtures/arm64/kernel-package).
KERNEL_PACKAGE = "linux-image-6.1.0-56-arm64"


def lab_cache() -> Path:
    """Where downloads live between runs, outside git (shared with the QEMU lab)."""
    return Path(os.environ.get("KEXECFW_LAB_CACHE") or Path.home() / ".cache" / "kexecfw-lab")


def _extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest), "./boot"], input=tar, check=True, capture_output=True)


def debian_arm64_image() -> Path | None:
    """A real Debian 6.1 arm64 kernel Image from the cache, downloading it with apt-get when possible."""
    cache = lab_cache()
    found = sorted(glob.glob(str(cache / "arm64-extract" / "boot" / "vmlinuz-6.1.0-*-arm64")))
    if found:
        return Path(found[-1])
    debs = sorted(glob.glob(str(cache / "linux-image-6.1.0-*-arm64_*_arm64.deb")))
    if not debs and shutil.which("apt-get") and shutil.which("dpkg-deb"):
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", f"{KERNEL_PACKAGE}:arm64"], cwd=cache, check=True,
                           capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError):
            return None     # no arm64 apt architecture configured, or offline
        debs = sorted(glob.glob(str(cache / "linux-image-6.1.0-*-arm64_*_arm64.deb")))
    if not debs:
        return None
    _extract(Path(debs[-1]), cache / "arm64-extract")
    found = sorted(glob.glob(str(cache / "arm64-extract" / "boot" / "vmlinuz-6.1.0-*-arm64")))
    return Path(found[-1]) if found else None


@pytest.fixture(scope="session")
def arm64_image() -> Path:
    image = debian_arm64_image()
    if image is None:
        pytest.skip("no Debian arm64 kernel: run `dpkg --add-architecture arm64 && apt-get update` "
                    f"or put {KERNEL_PACKAGE}_*.deb in {lab_cache()}")
    return image


@pytest.fixture(scope="session")
def arm64_image_bytes(arm64_image: Path) -> bytes:
    return arm64_image.read_bytes()


@pytest.fixture()
def arm64_sysroot() -> Path:
    return fixture_path("arm64", "sysroot")


@pytest.fixture()
def arm64_fixture() -> Path:
    return fixture_path("arm64")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (see setup.sh)")
    return path
