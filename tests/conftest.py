"""Shared test helpers: where the real-system snapshots are, and real Debian kernels."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


# Snapshots and captures of real Debian 12 guests, committed so that a plain clone runs every test
# (tests/data/README.md says where they come from). $KEXECFW_FIXTURES points at another set of the
# same layout (e.g. ../shared/fixtures), which then is used instead.
IN_REPO_FIXTURES = REPO / "tests" / "data" / "debian12-guests"


def fixtures_dir() -> Path | None:
    """The real-guest fixtures: $KEXECFW_FIXTURES if set, else the set committed in tests/data."""
    env = os.environ.get("KEXECFW_FIXTURES")
    for candidate in ([Path(env)] if env else []) + [IN_REPO_FIXTURES]:
        if candidate.is_dir():
            return candidate
    return None


def fixture_path(*parts: str) -> Path:
    base = fixtures_dir()
    if base is None or not base.joinpath(*parts).exists():
        pytest.skip(f"fixture {'/'.join(parts)} not present")
    return base.joinpath(*parts)


def fixture_kernel_package(arch: str) -> str | None:
    """The Debian kernel package the fixture guest of ``arch`` ran (fixtures/<arch>/kernel-package), if present."""
    base = fixtures_dir()
    path = base / arch / "kernel-package" if base else None
    return path.read_text().strip() if path and path.is_file() else None


def debian_kernel_or_skip(arch: str, generation: str = "6.1", package: str | None = None) -> Path:
    """A real Debian kernel image from the lab (kexecfw.lab.kernels), or a skip that says why there is none."""
    from kexecfw.lab.errors import LabError
    from kexecfw.lab.kernels import debian_kernel
    try:
        return debian_kernel(arch, generation, package)
    except LabError as e:
        pytest.skip(f"no Debian {generation} {arch} kernel{' ' + package if package else ''} "
                    f"(the lab downloads it from the Debian mirror into its cache): {e}")


def fixture_kernel(arch: str) -> Path:
    """The very Debian kernel the fixture guest of ``arch`` ran (the fixtures' kexec-tools numbers are for it),
    or a skip."""
    package = fixture_kernel_package(arch)
    if package is None:
        pytest.skip(f"{arch} fixture not present")
    return debian_kernel_or_skip(arch, "6.1", package)     # the fixture guests ran Debian 12


@pytest.fixture(scope="session")
def host_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of this machine, taken with kexecfw itself."""
    from kexecfw.snapshot import take_snapshot
    from kexecfw.sysroot import Sysroot
    dest = tmp_path_factory.mktemp("host") / "snapshot"
    take_snapshot(Sysroot("/"), dest)
    return dest


def real_sysroots() -> list[Path]:
    """Sysroots of real machines available here: the shared fixtures (the host's own come from host_snapshot)."""
    base = fixtures_dir()
    if base is None:
        return []
    return sorted(p for p in base.glob("*/sysroot") if p.is_dir())
