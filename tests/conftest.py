"""Shared test helpers: where the real-system snapshots are."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fixtures_dir() -> Path | None:
    """../shared/fixtures beside the repo (or $KEXECFW_FIXTURES), if present."""
    env = os.environ.get("KEXECFW_FIXTURES")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "fixtures"]:
        if candidate.is_dir():
            return candidate
    return None


def fixture_path(*parts: str) -> Path:
    base = fixtures_dir()
    if base is None or not base.joinpath(*parts).exists():
        pytest.skip(f"fixture {'/'.join(parts)} not present")
    return base.joinpath(*parts)


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
