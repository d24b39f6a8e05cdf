"""One lab run per set of parameters per process, shared by every caller (test modules, notebooks).

Several test modules assert on the same kind of run (arm64 panic with the
kexec-tools comparison, ...); booting it once saves a minute of TCG each time.
Results go to a temporary directory removed at exit, unless
KEXECFW_LAB_KEEP_RESULTS is set (then it is kept and its path is in the result).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from kexecfw.lab.result import LabResult

_runs: dict[tuple, LabResult] = {}
_lock = threading.Lock()


def _cleanup(path: Path) -> None:
    if not os.environ.get("KEXECFW_LAB_KEEP_RESULTS"):
        shutil.rmtree(path, ignore_errors=True)


def run_once(arch: str, scenario: str = "panic", loader: str = "kexecfw", **options: Any) -> LabResult:
    """kexecfw.lab.run(arch, scenario, loader, **options), booted only the first time it is asked for.

    ``keep`` is chosen here; every other option of :func:`kexecfw.lab.runner.run` is part of the key.
    """
    from kexecfw.lab.runner import run

    if "keep" in options:
        raise TypeError("run_once chooses the results directory itself; call kexecfw.lab.run to choose it")
    key = (arch, scenario, loader, tuple(sorted(options.items())))
    with _lock:
        if key not in _runs:
            keep = Path(tempfile.mkdtemp(prefix=f"kexecfw-lab-{arch}-{scenario}-"))
            atexit.register(_cleanup, keep)
            _runs[key] = run(arch, scenario, loader, keep=keep, **options)
        return _runs[key]
