"""Session fixtures for the slow lab tests: one QEMU run per (arch, scenario) per session.

The loader under test is kexecfw; KEXECFW_LAB_LOADER=kexec-tools runs the same
assertions with Debian's kexec-tools doing the loads (to tell a broken lab from
a broken loader).
"""
from __future__ import annotations

import os
from typing import Callable

import pytest

from kexecfw.lab.result import LabResult
from tests.labruns import shared_lab_run


@pytest.fixture(scope="session")
def lab_run() -> Callable[[str, str], LabResult]:
    # shared: tests/arm64, tests/vmcore, ... assert on the same kexecfw panic runs
    loader = os.environ.get("KEXECFW_LAB_LOADER", "kexecfw")

    def get(arch: str, scenario: str) -> LabResult:
        return shared_lab_run(arch, scenario, loader=loader)

    return get
