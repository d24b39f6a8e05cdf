"""Where the lab keeps downloads and builds between runs (never inside git)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """$KEXECFW_LAB_CACHE, else ~/.cache/kexecfw-lab; created on first use."""
    path = Path(explicit or os.environ.get("KEXECFW_LAB_CACHE") or Path.home() / ".cache" / "kexecfw-lab")
    path.mkdir(parents=True, exist_ok=True)
    return path
