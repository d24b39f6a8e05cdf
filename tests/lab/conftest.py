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




@pytest.fixture(scope="session")
def lab_run() -> Callable[[str, str], LabResult]:
    # run_once shares a run with any other test module asking for the same parameters
    # (tests/arm64 compares the same panic run with kexec-tools).
    from kexecfw.lab.shared import run_once

    loader = os.environ.get("KEXECFW_LAB_LOADER", "kexecfw")
    generation = os.environ.get("KEXECFW_LAB_GENERATION", "6.1")

    def get(arch: str, scenario: str) -> LabResult:
        result = run_once(arch, scenario, loader, compare_kexec_tools=(scenario == "panic" and loader == "kexecfw"),
                          kernel_generation=generation, timeout=900)
        print(result.summary())
        return result

    return get
