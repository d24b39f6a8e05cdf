"""Debian's dump readers of a guest's release, run on this host: crash for the guest's architecture.

crash needs the crashed kernel's vmlinux with its debug info (kernels.debian_debug_vmlinux: 300 MB
out of a 1 GB -dbg package) and far more memory than a capture kernel has, so it does not run in
the guest: the very binary the guest's release ships (trixie's crash 8.0.6 for riscv64) runs here,
under qemu-user when the architecture is foreign, on the dump the guest saved. Its package and
library closure come through the lab's private apt root into ``<cache>/readers/<suite>-<arch>/``.
"""
from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from pathlib import Path

from kexecfw.lab.apt import AptRoot, extract
from kexecfw.lab.cache import cache_dir
from kexecfw.lab.errors import LabError
from kexecfw.lab.targets import ArchTarget, Generation, arch_target, needs_emulation, target_generation

READERS_DIR = "readers"


def reader_root(target: ArchTarget, gen: Generation, packages: tuple[str, ...] = ("crash",),
                cache: Path | None = None) -> Path:
    """A tree with ``packages`` and their libraries extracted, from the release's apt root (cached
    by package versions)."""
    apt = AptRoot.for_guest(cache_dir(cache), target, gen)
    debs = apt.download(apt.library_closure(list(packages)))
    key = hashlib.sha256("\n".join(sorted(d.name for d in debs.values())).encode()).hexdigest()[:16]
    root = cache_dir(cache) / READERS_DIR / apt.root.name / key
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            for deb in debs.values():
                extract(deb, root)
            for top in ("lib", "lib64", "bin", "sbin"):   # merged /usr, as base-files would make it
                if (root / "usr" / top).is_dir() and not (root / top).exists():
                    (root / top).symlink_to(f"usr/{top}")
            (root / ".complete").touch()
    return root


def run_crash(arch: str, vmlinux: Path, dump: Path, commands: list[str], generation: str | None = None,
              cache: Path | None = None, timeout: float = 900,
              options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """crash of the guest's release on ``dump`` with ``vmlinux``, ``commands`` fed on its standard
    input (then ``exit``); its output as it printed it. crash runs under qemu-user for a foreign
    architecture; loading a 300 MB vmlinux that way takes a minute or two."""
    target = arch_target(arch)
    root = reader_root(target, target_generation(target, generation), cache=cache)
    binary = root / "usr/bin/crash"
    argv = [str(binary), "-s", *options, str(vmlinux), str(dump)]
    if needs_emulation(target):
        argv = [target.qemu_user, "-L", str(root), *argv]
    script = "".join(f"{c}\n" for c in commands) + "exit\n"
    try:
        return subprocess.run(argv, input=script, capture_output=True, text=True, timeout=timeout,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TERM": "dumb"})
    except FileNotFoundError as e:
        raise LabError(f"cannot run crash ({e.filename} missing): run the lab's host preparation") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"crash took over {timeout:.0f} s on {dump}") from None
