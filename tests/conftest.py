"""Shared test helpers: the host-safety marker, outside tools (oracles), where the real-system snapshots
are, and real Debian kernels."""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from kexecfw.syscalls import TEST_SESSION_ENV

REPO = Path(__file__).resolve().parent.parent

# This process and every process a test starts is a test session: kexecfw's real syscall layer refuses
# kexec_load, kexec_file_load and reboot (kexecfw/syscalls.py, raw_syscall), whatever the sysroot.
os.environ[TEST_SESSION_ENV] = "1"

# Set (to 1) where every outside tool must be there (CI, .ci/run): a missing oracle fails instead of skipping.
REQUIRE_ORACLES_ENV = "KEXECFW_REQUIRE_ORACLES"


def oracle_missing(what: str, install: str) -> None:
    reason = f"oracle {what} missing: {install}"
    if os.environ.get(REQUIRE_ORACLES_ENV) == "1":
        pytest.fail(f"{reason} (${REQUIRE_ORACLES_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def oracle(tool: str, package: str) -> str:
    """The path of outside program ``tool`` (Debian package ``package``) that a test compares against
    or runs; a skip that says what to install when it is missing (a failure under $KEXECFW_REQUIRE_ORACLES=1)."""
    path = shutil.which(tool)
    if path is None:
        oracle_missing(tool, f"apt-get install {package}")
    return path


def oracle_module(name: str, install: str) -> ModuleType:
    """Python module ``name`` that a test compares against or needs (drgn, lzo), installed by ``install``;
    missing: a skip, or a failure under $KEXECFW_REQUIRE_ORACLES=1."""
    try:
        return importlib.import_module(name)
    except ImportError:
        oracle_missing(f"Python module {name}", install)
        raise  # not reached: skip and fail raise


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every skip's reason, counted, at the end of any run (also without -rs): none passes unseen."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skip reasons")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{count:4d}  {reason}")


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
    """A file of the real-guest fixtures; missing, it fails the test (the data is part of the checkout)."""
    base = fixtures_dir()
    if base is None or not base.joinpath(*parts).exists():
        pytest.fail(f"test data {'/'.join(parts)} missing from {base or IN_REPO_FIXTURES} "
                    "(tests/data/debian12-guests, or $KEXECFW_FIXTURES)", pytrace=False)
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
        fixture_path(arch, "kernel-package")   # fails: the test data is incomplete
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
