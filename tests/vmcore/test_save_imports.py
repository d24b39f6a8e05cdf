"""What `vmcore save` imports in a capture kernel (one CPU): under emulation each module costs ten times
its host time, and the save's start-up is part of the downtime. Not timed (bench/run.py capture times it):
this pins down modules the save does not need."""
from __future__ import annotations

import os

import pytest

from tests.vmcore.test_dmesg_startup import imported_modules, run_kexecfw

# typing, dataclasses (inspect, ast, dis, tokenize with it), shutil (bz2, lzma) and the thread pool
# (concurrent.futures, logging) are not needed by a save on one CPU that goes well
NOT_IMPORTED = ("typing", "dataclasses", "inspect", "shutil", "bz2", "lzma", "concurrent.futures", "logging",
                "pluggy", "pathlib")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity to pin one CPU")
def test_a_save_on_one_cpu_imports_only_what_it_needs(mini_vmcores, tmp_path):
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})      # the child inherits one CPU, as in a capture kernel
    try:
        done = run_kexecfw("vmcore", "save", "-i", str(mini_vmcores["x86_64"]), str(tmp_path / "dump.kdump"),
                           importtime=True)
    finally:
        os.sched_setaffinity(0, before)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    imported = imported_modules(done.stderr)
    assert "kexecfw.vmcore.writer" in imported      # the importtime report was read
    assert not imported & set(NOT_IMPORTED), f"a one-CPU save imports {sorted(imported & set(NOT_IMPORTED))}"
