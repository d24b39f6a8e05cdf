"""Host preparation: the QEMU system emulator (and qemu-user for foreign guests), installed when missing;
with ``full_os=True`` also what full-OS guest images are built with (mmdebstrap, e2fsprogs, qemu-img).

Idempotent: a tool already on PATH is not reinstalled. Installing needs root
(the lab is meant for CI machines and developer boxes where that is normal);
otherwise the error names the apt-get command to run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable

from pathlib import Path

from kexecfw.lab.errors import LabError
from kexecfw.lab.targets import ArchTarget, needs_emulation

# program -> Debian package that provides it
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-system-riscv64": "qemu-system-misc",
    "qemu-aarch64-static": "qemu-user-static",
    "qemu-riscv64-static": "qemu-user-static",
    "qemu-x86_64-static": "qemu-user-static",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "arch-test": "arch-test",
}
# Full-OS guests (kexecfw.lab.fullos): the root tree, its ext4 image, reading results back, qcow2 overlays.
FULL_OS_TOOLS = ("mmdebstrap", "mkfs.ext4", "debugfs", "qemu-img")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d")   # qemu-user-static's registrations (systemd-binfmt reads them at boot)
APT_LOCK_WAIT = "600"  # seconds to wait for another apt/dpkg (setup.sh, unattended upgrades)


def tools_for(arch: ArchTarget, full_os: bool = False) -> list[str]:
    tools = ["apt-get", "dpkg-deb", arch.qemu_system]
    if needs_emulation(arch):
        tools.append(arch.qemu_user)
    if full_os:
        tools.extend(FULL_OS_TOOLS)
        if needs_emulation(arch):
            tools.append("arch-test")   # mmdebstrap's check that a foreign architecture's binaries run
    return tools


def missing_packages(arch: ArchTarget, full_os: bool = False) -> list[str]:
    return sorted({TOOLS[t] for t in tools_for(arch, full_os) if shutil.which(t) is None})


def ensure_host_tools(arch: ArchTarget, log: Callable[[str], None] = print, full_os: bool = False) -> None:
    """apt-get install what the lab needs for this guest architecture, if anything is missing."""
    packages = missing_packages(arch, full_os)
    if packages:
        _apt_install(packages, log)
        still = missing_packages(arch, full_os)
        if still:
            raise LabError(f"apt-get installed {' '.join(packages)} but {', '.join(still)} is still missing")
    if full_os and needs_emulation(arch):
        ensure_binfmt(arch, log)


def _apt_install(packages: list[str], log: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        raise LabError(f"the lab needs {', '.join(packages)}: run `apt-get install {' '.join(packages)}` as root")
    log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    for cmd in (["apt-get", *lock, "-q", "update"],
                ["apt-get", *lock, "-q", "-y", "--no-install-recommends", "install", *packages]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            action = "update" if "update" in cmd else f"install {' '.join(packages)}"
            raise LabError(f"apt-get {action} failed: {last}")


def binfmt_name(arch: ArchTarget) -> str:
    """qemu-user-static's binfmt_misc entry for the architecture: qemu-aarch64 for qemu-aarch64-static."""
    return arch.qemu_user.removesuffix("-static")


def ensure_binfmt(arch: ArchTarget, log: Callable[[str], None] = print) -> None:
    """The guest's binaries run in a chroot (mmdebstrap's maintainer scripts) through binfmt_misc: register
    qemu-user-static's entry as systemd-binfmt does at boot, where no systemd did (a container)."""
    name = binfmt_name(arch)
    if (BINFMT / name).exists():
        return
    conf = BINFMT_CONF / f"{name}.conf"
    if not conf.is_file():
        raise LabError(f"{conf} is missing: apt-get install qemu-user-static")
    if os.geteuid() != 0:
        raise LabError(f"binfmt_misc has no {name} entry: run `systemctl restart systemd-binfmt` as root")
    if not (BINFMT / "register").exists():
        done = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            raise LabError(f"mount of binfmt_misc on {BINFMT} failed: {done.stderr.strip() or done.returncode}")
    log(f"registering {name} with binfmt_misc ({conf})")
    line = next((ln for ln in conf.read_text().splitlines() if ln.startswith(":")), None)
    if line is None:
        raise LabError(f"{conf} has no registration line")
    try:
        (BINFMT / "register").write_text(line)
    except OSError as e:
        raise LabError(f"binfmt_misc refused {name} from {conf}: {e.strerror}") from None
