"""arm64 test helpers: the shared fixtures of a real Debian 6.1 arm64 guest and real Debian arm64 kernels."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kexecfw.lab.targets import GENERATIONS
from tests.conftest import debian_kernel_or_skip, fixture_kernel_package, fixture_path, oracle, oracle_missing


def arm64_kernel(generation: str = "6.1") -> Path:
    """A real Debian arm64 kernel Image of the lab's kernel generation, or a skip saying why there is none.

    For 6.1 it is the kernel the fixtures' guest ran when the fixtures are here: the kexec-tools output
    the tests compare with was taken on that kernel.
    """
    package = fixture_kernel_package("arm64") if generation == "6.1" else None
    return debian_kernel_or_skip("arm64", generation, package)


@pytest.fixture(scope="session")
def arm64_image() -> Path:
    return arm64_kernel("6.1")


@pytest.fixture(scope="session", params=list(GENERATIONS))
def any_arm64_image(request: pytest.FixtureRequest) -> Path:
    """Each kernel generation in turn."""
    return arm64_kernel(request.param)


@pytest.fixture(scope="session")
def arm64_image_bytes(arm64_image: Path) -> bytes:
    return arm64_image.read_bytes()


@pytest.fixture()
def arm64_sysroot() -> Path:
    return fixture_path("arm64", "sysroot")


@pytest.fixture()
def arm64_fixture() -> Path:
    return fixture_path("arm64")


# the Debian package of each build tool the arm64 tests run (setup.sh installs them)
TOOL_PACKAGES = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "aarch64-linux-gnu-ld": "binutils-aarch64-linux-gnu",
                 "gcc": "gcc", "cpio": "cpio"}


def need_tool(name: str) -> str:
    return oracle(name, TOOL_PACKAGES.get(name, name))


def need_cross_libc() -> None:
    """The static aarch64 C library the test programs link against (libc6-dev-arm64-cross)."""
    if not Path("/usr/aarch64-linux-gnu/lib/libc.a").exists():
        oracle_missing("aarch64 libc.a", "apt-get install libc6-dev-arm64-cross")


def build_initramfs(dest: Path, init_source: Path, extra: dict[str, Path] | None = None) -> Path:
    """A newc cpio with /dev, /proc, /sys, ``init_source`` compiled as a static aarch64 /init, and
    ``extra`` files (name in the archive -> file on the host)."""
    gcc = need_tool("aarch64-linux-gnu-gcc")
    need_tool("cpio")
    need_cross_libc()
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
