"""What ``kdump load`` and ``kdump test`` record under /var/lib/kexecfw/kdump (small JSON files)."""
from __future__ import annotations

import json
import os

from kexecfw.errors import KexecfwError

STATE_FILE_MAX = 1 << 20


def read_state(root, rel: str) -> dict | None:
    """A recorded JSON document, or None when absent or unreadable (it is then as if never recorded)."""
    try:
        with open(root.path(rel), "rb") as f:
            doc = json.loads(f.read(STATE_FILE_MAX))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_state(root, rel: str, doc: dict) -> None:
    """Write a JSON document atomically (beside it, synced, renamed)."""
    path = root.path(rel)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise KexecfwError(f"cannot write {path}: {e.strerror}") from None


def boot_id(root) -> str | None:
    """This boot's id (the kernel's random boot_id), recorded by ``load``: a record from an earlier boot
    does not describe what is loaded now."""
    text = (root.read_optional("proc/sys/kernel/random/boot_id") or "").strip()
    return text[:64] or None


def remove_state(root, rel: str) -> None:
    try:
        os.unlink(root.path(rel))
    except FileNotFoundError:
        pass
