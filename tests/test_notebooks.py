"""Every notebook runs top to bottom as shipped, makes its figures, and matches its paired .py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def uses_lab(path: Path) -> bool:
    return "lab_result(" in path.with_suffix(".py").read_text()


# Notebooks that open lab runs are slow: they get this session's shared arm64 and x86_64 panic
# runs (the ones tests/lab boots) through $KEXECFW_LAB_RESULTS instead of booting their own.
EXECUTED = [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if uses_lab(p) else []) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_text_form_is_in_sync(path):
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path)
    py = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in nb.cells] == [c.source for c in py.cells], \
        f"{path.name} and its .py differ: run `jupytext --sync {path.with_suffix('.py').name}`"


@pytest.mark.parametrize("path", EXECUTED)
def test_notebook_executes_and_draws(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if uses_lab(path) and not os.environ.get("KEXECFW_NOTEBOOK_FRESH_LAB"):
        from tests.labruns import shared_lab_run
        runs = [shared_lab_run(arch) for arch in ("arm64", "x86_64")]
        assert all(r.ok for r in runs), "\n".join(r.summary() for r in runs if not r.ok)
        monkeypatch.setenv("KEXECFW_LAB_RESULTS", os.pathsep.join(str(r.directory) for r in runs))
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
    assert all(len(o["data"]["image/png"]) > 2000 for o in images)  # non-empty pictures
