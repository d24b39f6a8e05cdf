"""arm64 test helpers: the shared fixtures of a real Debian 6.1 arm64 guest and a real Debian arm64 kernel."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import fixture_path

# Debian arm64 kernels of two generations: (package, extract folder, vmlinuz glob). 6.1 is the one the
# fixtures' guest ran (fixtures/arm64/kernel-package); 6.12 is Debian 13's (52-bit VA, KALLSYMS_ALL=y),
# also built for Debian 12 (bookworm-security).
KERNELS = {
    "6.1": ("linux-image-6.1.0-56-arm64", "arm64-extract", "vmlinuz-6.1.0-*-arm64"),
    "6.12": ("linux-image-6.12.117+deb12-arm64", "arm64-612-extract", "vmlinuz-6.12.*-arm64"),
}


def lab_cache() -> Path:
    """Where downloads live between runs, outside git (shared with the QEMU lab)."""
    return Path(os.environ.get("KEXECFW_LAB_CACHE") or Path.home() / ".cache" / "kexecfw-lab")


def _extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest), "./boot"], input=tar, check=True, capture_output=True)


def debian_arm64_image(generation: str = "6.1") -> Path | None:
    """A real Debian arm64 kernel Image from the cache, downloading it with apt-get when possible."""
    package, folder, pattern = KERNELS[generation]
    cache = lab_cache()
    found = sorted(glob.glob(str(cache / folder / "boot" / pattern)))
    if found:
        return Path(found[-1])
    debs = sorted(glob.glob(str(cache / f"{package}_*_arm64.deb")))
    if not debs and shutil.which("apt-get") and shutil.which("dpkg-deb"):
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", f"{package}:arm64"], cwd=cache, check=True,
                           capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError):
            return _lab_kernel(generation)     # no arm64 apt architecture configured here
        debs = sorted(glob.glob(str(cache / f"{package}_*_arm64.deb")))
    if not debs:
        return _lab_kernel(generation)
    _extract(Path(debs[-1]), cache / folder)
    found = sorted(glob.glob(str(cache / folder / "boot" / pattern)))
    return Path(found[-1]) if found else None


def _lab_kernel(generation: str) -> Path | None:
    """The kernel the QEMU lab fetched for this generation (its own apt root; 6.12 comes from Debian 13)."""
    try:
        from kexecfw.lab.targets import arch_target, generation as lab_generation
        from kexecfw.lab.userland import prepare_userland
        return prepare_userland(arch_target("arm64"), lab_generation(generation), lab_cache(),
                                log=lambda _msg: None).kernel
    except Exception:   # offline, or the lab cannot build here: the caller skips
        return None


def _image_or_skip(generation: str) -> Path:
    image = debian_arm64_image(generation)
    if image is None:
        pytest.skip(f"no Debian {generation} arm64 kernel: run `dpkg --add-architecture arm64 && apt-get update` "
                    f"or put {KERNELS[generation][0]}_*.deb in {lab_cache()}")
    return image


@pytest.fixture(scope="session")
def arm64_image() -> Path:
    return _image_or_skip("6.1")


@pytest.fixture(scope="session", params=["6.1", "6.12"])
def any_arm64_image(request: pytest.FixtureRequest) -> Path:
    """Each kernel generation in turn."""
    return _image_or_skip(request.param)


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


def build_initramfs(dest: Path, init_source: Path, extra: dict[str, Path] | None = None) -> Path:
    """A newc cpio with /dev, /proc, /sys, ``init_source`` compiled as a static aarch64 /init, and
    ``extra`` files (name in the archive -> file on the host)."""
    gcc = need_tool("aarch64-linux-gnu-gcc")
    need_tool("cpio")
    if not Path("/usr/aarch64-linux-gnu/lib/libc.a").exists():
        pytest.skip("libc6-dev-arm64-cross is not installed (see setup.sh)")
    root = dest / "root"
    for d in ("dev", "proc", "sys"):
        (root / d).mkdir(parents=True, exist_ok=True)
    subprocess.run([gcc, "-static", "-O1", "-Wall", "-o", str(root / "init"), str(init_source)], check=True)
    names = ["dev", "proc", "sys", "init"]
    for name, source in (extra or {}).items():
        shutil.copyfile(source, root / name)
        names.append(name)
    archive = dest / "initramfs.cpio"
    with open(archive, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input="\n".join(names).encode() + b"\n",
                       stdout=out, cwd=root, check=True)
    return archive
