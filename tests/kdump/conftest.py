"""Temporary roots for `kexecfw kdump`: a copy of a real guest's sysroot with the files a Debian system has."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, fixture_path
from tests.vmcore.conftest import expected_dmesg, fixtures, mini_vmcores  # noqa: F401  (fixtures used here)


def make_root(tmp_path: Path, arch: str = "x86_64") -> Path:
    """A root holding the fixture guest's /proc and /sys, a stand-in kernel image for its release
    (a real bzImage/Image only where the test plans a load), /lib/modules/<release>/modules.dep and
    an empty /var/crash."""
    root = tmp_path / "root"
    shutil.copytree(fixture_path(arch, "sysroot"), root)
    release = (root / "proc/sys/kernel/osrelease").read_text().strip()
    (root / "lib/modules" / release).mkdir(parents=True)
    (root / "lib/modules" / release / "modules.dep").write_text("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n")
    (root / "var/crash").mkdir(parents=True)
    (root / "boot").mkdir()
    return root


def release_of(root: Path) -> str:
    return (root / "proc/sys/kernel/osrelease").read_text().strip()


def kdump(root: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`kexecfw kdump --root ROOT ARGS` in a subprocess (the test session's syscall guard inherited)."""
    done = subprocess.run([sys.executable, "-m", "kexecfw", "kdump", "--root", str(root), *args],
                          capture_output=True, text=True, cwd=REPO, env=os.environ.copy(), timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def recorded(root: Path) -> list[dict]:
    log = root / "var/lib/kexecfw/kdump/actions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)
