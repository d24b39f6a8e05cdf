"""What ``kexecfw kdump load`` loads: the capture kernel, its initrd and its command line."""
from __future__ import annotations

import shlex

from kexecfw.kdump import SAVE_UNIT, initrd_path, running_release
from kexecfw.kdump.config import KdumpConfig
from kexecfw.records import Record


class Capture(Record, frozen=True):
    """The panic load of a system: paths are absolute on that system (resolve them through its root)."""

    release: str
    kernel: str
    initrd: str
    cmdline: str

    def to_json(self) -> dict:
        return {"release": self.release, "kernel": self.kernel, "initrd": self.initrd, "cmdline": self.cmdline}


def _name(word: str) -> str:
    return word.split("=", 1)[0]


def capture_cmdline(running: str, config: KdumpConfig) -> str:
    """The capture kernel's command line: the running one without ``config.remove``'s parameters and
    without those ``config.append`` sets again, then ``config.append`` and the save unit."""
    words = shlex.split(running, posix=False) if running.strip() else []
    added = shlex.split(config.append, posix=False) + [f"systemd.unit={SAVE_UNIT}"]
    drop = set(config.remove) | {_name(w) for w in added}
    return " ".join([w for w in words if _name(w) not in drop] + added)


def kernel_release(root, kernel: str) -> str | None:
    """The release of a kernel image named as Debian names them (``vmlinuz-<release>``) when that
    release's modules are installed: the capture initrd must hold the modules of the kernel it boots."""
    name = kernel.rsplit("/", 1)[-1]
    release = name.partition("-")[2] if name.startswith("vmlinuz-") else ""
    return release if release and root.path(f"/lib/modules/{release}").is_dir() else None


def capture_of(root, config: KdumpConfig) -> Capture:
    """The configured panic load of the system at ``root``: the running kernel's image, or the configured
    one with an initrd for its release (from its name; else the running release)."""
    release = (config.kernel and kernel_release(root, config.kernel)) or running_release(root)
    return Capture(release=release, kernel=config.kernel or f"/boot/vmlinuz-{release}",
                   initrd=config.initrd or initrd_path(release), cmdline=capture_cmdline(root.cmdline(), config))


def plan_capture(root, capture: Capture):
    """Plan (and validate) the panic load on ``root`` without any syscall: (plan, context)."""
    from kexecfw.load import plan_load
    from kexecfw.model import LoadOptions
    options = LoadOptions(kernel=root.path(capture.kernel), initrd=root.path(capture.initrd),
                          cmdline=capture.cmdline, panic=True)
    return plan_load(options, root)


def sha256_file(path) -> str | None:
    """The sha256 of a file, or None when it cannot be read."""
    import hashlib
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
