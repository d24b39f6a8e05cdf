"""The capture initrd: built by initramfs-tools with MODULES=dep, rebuilt when what went into it changed.

Like kdump-tools, the build copies /etc/initramfs-tools to /var/lib/kexecfw/kdump/initramfs-tools,
sets MODULES=dep there (only the modules this machine's root device needs: a small initrd for a small
reservation) and runs ``mkinitramfs -d <that copy> -o <initrd> <release>``. The initrd only has to
mount the real root; the save itself runs from the root filesystem (the save unit).

Whether to rebuild is decided from content, never from mtimes: a manifest beside the initrd holds
the sha256 of every input (the kernel image, modules.dep, the initramfs-tools configuration and
hooks, /etc/fstab, the root= of the command line, kdump.toml, kexecfw's version); the initrd is
current when it exists and the manifest computed now equals the stored one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

from kexecfw.errors import KexecfwError
from kexecfw.kdump import STATE_DIR, initrd_path, manifest_path
from kexecfw.kdump.config import CONFIG_PATH

CONF_COPY = f"{STATE_DIR}/initramfs-tools"
# Files and trees whose content decides the initrd (absolute on the system)
INPUT_FILES = ("/etc/fstab", CONFIG_PATH)
INPUT_TREES = ("/etc/initramfs-tools", "/usr/share/initramfs-tools/hooks", "/usr/share/initramfs-tools/scripts")
TREE_FILES_MAX = 5000        # a tree of initramfs hooks, not a disk: refuse to hash past this


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path) -> str | None:
    from kexecfw.kdump.plan import sha256_file
    return sha256_file(path)


def _tree_digests(root, tree: str) -> dict[str, str]:
    base = root.path(tree)
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.join(tree, os.path.relpath(full, base))
            if len(out) >= TREE_FILES_MAX:
                raise KexecfwError(f"{base} holds more than {TREE_FILES_MAX} files: not an initramfs-tools tree")
            out[rel] = _file_digest(full) or "unreadable"
    return out


def root_parameter(cmdline: str) -> str:
    return " ".join(w for w in cmdline.split() if w.startswith(("root=", "rootflags=", "rootfstype=")))


def manifest(root, release: str, kernel: str) -> dict:
    """The inputs of the capture initrd for ``release`` on ``root``, each by its sha256."""
    from kexecfw import __version__
    inputs: dict[str, str | None] = {
        kernel: _file_digest(root.path(kernel)),
        f"/lib/modules/{release}/modules.dep": _file_digest(root.path(f"/lib/modules/{release}/modules.dep")),
    }
    for f in INPUT_FILES:
        inputs[f] = _file_digest(root.path(f))
    for tree in INPUT_TREES:
        inputs.update(_tree_digests(root, tree))
    return {"schema": 1, "release": release, "kexecfw": __version__,
            "root": root_parameter(root.cmdline()), "modules": "dep", "inputs": inputs}


def stored_manifest(root, release: str) -> dict | None:
    try:
        with open(root.path(manifest_path(release))) as f:
            doc = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def initrd_state(root, release: str, kernel: str, initrd: str | None = None) -> tuple[bool, str]:
    """(current, why): is the capture initrd there and built from what is on the system now?"""
    initrd = initrd or initrd_path(release)
    if not root.path(initrd).is_file():
        return False, f"{initrd} is missing: run `kexecfw kdump rebuild`"
    if initrd != initrd_path(release):
        return True, f"{initrd} (configured; kexecfw does not build it)"
    stored = stored_manifest(root, release)
    if stored is None:
        return False, f"{initrd} has no manifest: run `kexecfw kdump rebuild`"
    now = manifest(root, release, kernel)
    if stored == now:
        return True, f"{initrd} is current"
    changed = _changes(stored, now)
    return False, f"{initrd} is out of date ({changed} changed): run `kexecfw kdump rebuild`"


def _changes(old: dict, new: dict) -> str:
    names = [k for k in ("release", "kexecfw", "root", "modules") if old.get(k) != new.get(k)]
    a, b = old.get("inputs") or {}, new.get("inputs") or {}
    names += sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _write_conf_copy(root) -> str:
    """/etc/initramfs-tools copied to CONF_COPY with MODULES=dep; returns the copy's path on the system."""
    src, dst = root.path("/etc/initramfs-tools"), root.path(CONF_COPY)
    shutil.rmtree(dst, ignore_errors=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        dst.mkdir(parents=True)
    conf = dst / "initramfs.conf"
    lines = conf.read_text().splitlines() if conf.is_file() else []
    lines = [ln for ln in lines if not ln.strip().startswith("MODULES=")] + ["MODULES=dep"]
    conf.write_text("\n".join(lines) + "\n")
    return CONF_COPY


def rebuild(root, actions, release: str, kernel: str, *, force: bool = False) -> dict:
    """Build the capture initrd for ``release`` unless it is current (or ``force``); report what happened."""
    current, why = initrd_state(root, release, kernel)
    if current and not force:
        return {"rebuilt": False, "initrd": initrd_path(release), "why": why}
    if not root.path(f"/lib/modules/{release}").is_dir():
        raise KexecfwError(f"no /lib/modules/{release} on this system: install the kernel's package "
                           f"(linux-image-{release}) before `kexecfw kdump rebuild`")
    state = root.path(STATE_DIR)
    state.mkdir(parents=True, exist_ok=True)
    conf = _write_conf_copy(root)
    out = initrd_path(release)
    tmp = f"{out}.new"
    actions.command(["mkinitramfs", "-d", conf, "-o", tmp, release],
                    f"build the capture initrd for {release}")
    if not actions.live:
        return {"rebuilt": False, "initrd": out, "why": f"{why}; mkinitramfs recorded, not run (not the live root)"}
    os.replace(root.path(tmp), root.path(out))
    write_manifest(root, release, kernel)
    return {"rebuilt": True, "initrd": out, "why": why}


def write_manifest(root, release: str, kernel: str) -> None:
    """Record what the capture initrd for ``release`` was built from (right after building it)."""
    path = root.path(manifest_path(release))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest(root, release, kernel), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
