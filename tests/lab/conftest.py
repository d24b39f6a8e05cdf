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
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], LabResult]:
    from kexecfw.lab.runner import run

    loader = os.environ.get("KEXECFW_LAB_LOADER", "kexecfw")
    generation = os.environ.get("KEXECFW_LAB_GENERATION", "6.1")
    runs: dict[tuple[str, str], LabResult] = {}

    def get(arch: str, scenario: str) -> LabResult:
        key = (arch, scenario)
        if key not in runs:
            keep = tmp_path_factory.mktemp(f"lab-{arch}-{scenario}") / "results"
            runs[key] = run(arch, scenario, loader, compare_kexec_tools=(scenario == "panic" and loader == "kexecfw"),
                            keep=keep, kernel_generation=generation, timeout=600)
            print(runs[key].summary())
        return runs[key]

    return get
