"""Lab results for the notebooks: the most recent successful run, or a fresh one when there is none.

What CI does (and the notebooks say): look in ``$KEXECFW_LAB_RESULTS`` (``:``-separated; each entry a
result directory or a directory of them) and in ``./lab-results`` and the repository's ``lab-results``;
use the newest run that passed for the architecture asked. Boot a fresh QEMU run
(``kexecfw.lab.run``, about 1-2 minutes per architecture under TCG) when none is found, or always
when ``KEXECFW_NOTEBOOK_FRESH_LAB=1``; it is kept in the checkout's ``lab-results`` (or under the
first ``$KEXECFW_LAB_RESULTS`` entry).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kexecfw.errors import BadInputError

if TYPE_CHECKING:
    from kexecfw.lab.result import LabResult

REPO = Path(__file__).resolve().parent.parent.parent
FRESH_ENV = "KEXECFW_NOTEBOOK_FRESH_LAB"
RESULTS_ENV = "KEXECFW_LAB_RESULTS"


def result_roots() -> list[Path]:
    """Directories that may hold lab results, in the order they are searched."""
    roots = [Path(p) for p in os.environ.get(RESULTS_ENV, "").split(os.pathsep) if p]
    for base in (Path.cwd(), REPO):
        roots.append(base / "lab-results")
    return roots


def results_home() -> Path:
    """Where a fresh run is kept: the first ``$KEXECFW_LAB_RESULTS`` entry, else the checkout's
    ``lab-results`` (not the notebook's folder, which CI runs in), else ``./lab-results``."""
    env = [p for p in os.environ.get(RESULTS_ENV, "").split(os.pathsep) if p]
    if env:
        first = Path(env[0])
        return first.parent if (first / "result.json").is_file() else first
    return REPO / "lab-results" if (REPO / "pyproject.toml").is_file() else Path("lab-results")


def _result_dirs() -> list[Path]:
    found: dict[Path, None] = {}
    for root in result_roots():
        if (root / "result.json").is_file():
            found[root.resolve()] = None
        elif root.is_dir():
            for child in sorted(root.iterdir()):
                if (child / "result.json").is_file():
                    found[child.resolve()] = None
    return list(found)


def find_lab_results(arch: str, scenario: str = "panic", loader: str = "kexecfw",
                     generation: str = "6.1") -> list[Path]:
    """Successful runs matching the arguments, newest first (by the time result.json was written)."""
    matches = []
    for d in _result_dirs():
        try:
            data = json.loads((d / "result.json").read_text())
        except (OSError, ValueError):
            continue
        if (data.get("ok") and data.get("arch") == arch and data.get("scenario") == scenario
                and data.get("loader") == loader and data.get("generation") == generation):
            matches.append(d)
    return sorted(matches, key=lambda d: (d / "result.json").stat().st_mtime, reverse=True)


def lab_result(arch: str, scenario: str = "panic", *, loader: str = "kexecfw", generation: str = "6.1",
               fresh: bool | None = None) -> "LabResult":
    """The newest successful lab run for ``arch``, or a new one (see the module docstring).

    ``fresh`` overrides ``$KEXECFW_NOTEBOOK_FRESH_LAB``. A fresh run is kept in :func:`results_home`.
    Raises BadInputError when a fresh run fails (its summary says why).
    """
    from kexecfw.lab import LabResult
    if fresh is None:
        fresh = os.environ.get(FRESH_ENV, "") not in ("", "0")
    if not fresh:
        found = find_lab_results(arch, scenario, loader, generation)
        if found:
            return LabResult.load(found[0])
    from kexecfw.lab import run
    keep = results_home() / f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run(arch=arch, scenario=scenario, loader=loader, kernel_generation=generation, keep=keep,
                 log=lambda msg: print(f"lab: {msg}", flush=True))
    if not result.ok:
        raise BadInputError(f"the {arch} lab run failed: {result.failure} (see {result.directory})")
    return result


def lab_kernel(result: "LabResult") -> Path:
    """The kernel image (vmlinuz) the lab guest booted and loaded as its crash kernel.

    It comes from the lab (:func:`kexecfw.lab.kernels.debian_kernel`): the Debian package of the
    run's kernel release, from the lab cache where the run left it, else from the Debian mirror.
    """
    from kexecfw.lab.errors import LabError
    from kexecfw.lab.kernels import debian_kernel
    try:
        return debian_kernel(result.arch, result.generation, package=f"linux-image-{result.kernel_release}")
    except LabError as e:
        raise BadInputError(f"the {result.kernel_release} kernel of {result.directory} cannot be had: {e}; "
                            f"run `python -m kexecfw lab prepare --arch {result.arch}`") from None


def lab_segment(result: "LabResult", name: str) -> Path:
    """The bytes of one segment of the guest's real load (``plan/NN-<name>.bin``)."""
    found = sorted(result.path("plan").glob(f"[0-9][0-9]-{name}.bin"))
    if not found:
        raise BadInputError(f"{result.directory}/plan has no {name} segment")
    return found[0]


def lab_dump(result: "LabResult", which: str = "kexecfw") -> Path:
    """The run's saved ``-d 31`` dump (``kexecfw`` or ``makedumpfile``)."""
    path = result.path(f"dump/{which}-d31.kdump")
    if not path.is_file():
        raise BadInputError(f"{result.directory} has no {which} -d 31 dump (dump/{path.name})")
    return path
