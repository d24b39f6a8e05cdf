"""The source tree's kexecfw as a wheel installs it, for subprocesses run without site (``python -S``).

The editable install maps ``kexecfw.plugins`` to plugins/ with an import hook that a .pth file installs,
and -S leaves .pth files out; a directory of symlinks with kexecfw/plugins inside kexecfw/ gives the
installed layout instead. Run the subprocess with this directory first on PYTHONPATH and as its working
directory (``-m`` puts the working directory first on sys.path).
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from tests.conftest import REPO

_layouts: list[Path] = []


def installed_layout() -> Path:
    """A directory holding kexecfw/ (each entry a symlink into the source tree) with kexecfw/plugins -> plugins/."""
    if not _layouts:
        root = Path(tempfile.mkdtemp(prefix="kexecfw-layout-"))
        (root / "kexecfw").mkdir()
        for entry in (REPO / "kexecfw").iterdir():
            (root / "kexecfw" / entry.name).symlink_to(entry)
        (root / "kexecfw" / "plugins").symlink_to(REPO / "plugins")
        atexit.register(shutil.rmtree, root, True)
        _layouts.append(root)
    return _layouts[0]
