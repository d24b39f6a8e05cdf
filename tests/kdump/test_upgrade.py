"""A kernel upgrade: the kernel hooks enable installs build the new kernel's capture initrd (and reload only
when it is the running one), the next boot's load picks the running kernel (or the configured one), and a
new build of the same release is a rebuild because its content changed. The hooks are the real generated
shell scripts run by sh against a temporary root (kexecfw --sysroot ROOT), with two real Debian kernels in
its /boot; every system action is recorded, not run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

from kexecfw.kdump import initrd_path, manifest_path
from kexecfw.kdump.initrd import write_manifest
from kexecfw.kdump.units import install_plugin, postinst_hook, postrm_hook
from kexecfw.sysroot import Sysroot
from tests.conftest import debian_kernel_or_skip, fixture_kernel
from tests.kdump.conftest import kdump, recorded, release_of

OLD = "6.1.0-56-cloud-amd64"          # the fixture guest's kernel
NEW = "6.1.0-57-cloud-amd64"


def _two_kernels(root):
    assert release_of(root) == OLD
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{OLD}")
    shutil.copy(debian_kernel_or_skip("x86_64", "6.1", f"linux-image-{NEW}"), root / f"boot/vmlinuz-{NEW}")
    (root / "lib/modules" / NEW).mkdir(parents=True)
    (root / "lib/modules" / NEW / "modules.dep").write_text("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n")


def _built(root, release: str) -> None:
    """What the recorded mkinitramfs leaves on a live system: the initrd and its manifest."""
    path = root / initrd_path(release).lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"070701" + release.encode() + bytes(4000))
    write_manifest(Sysroot(root), release, f"/boot/vmlinuz-{release}")


def _boot(root, release: str) -> None:
    """The machine rebooted into ``release``: a new running kernel, nothing loaded yet."""
    (root / "proc/sys/kernel/osrelease").write_text(release + "\n")
    (root / "proc/cmdline").write_text(f"BOOT_IMAGE=/boot/vmlinuz-{release} console=ttyS0 crashkernel=384M\n")
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    (root / "proc/sys/kernel/random").mkdir(exist_ok=True)
    (root / "proc/sys/kernel/random/boot_id").write_text(f"{uuid.uuid4()}\n")


def _run_hook(root, tmp_path, text: str, *args: str) -> subprocess.CompletedProcess:
    """Run a generated hook with sh: kexecfw acts on ``root`` (so do the hook's own file removals), and
    `uname -r` says the root's running release (this process cannot boot another kernel)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "uname").write_text(f"#!/bin/sh\ncat {root}/proc/sys/kernel/osrelease\n")
    (bin_dir / "uname").chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(text.replace('"/var/lib/kexecfw/', f'"{root}/var/lib/kexecfw/'))   # its rm, under the root
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(hook), *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def _kexecfw_on(root) -> list[str]:
    return [sys.executable, "-m", "kexecfw", "--sysroot", str(root)]


def test_upgrade_builds_the_new_initrd_and_the_next_boot_loads_the_new_kernel(root, tmp_path):
    _two_kernels(root)
    _boot(root, OLD)
    assert kdump(root, "enable").returncode == 0
    for rel in ("etc/kernel/postinst.d/zz-kexecfw-kdump", "etc/kernel/postrm.d/zz-kexecfw-kdump",
                "etc/kernel/install.d/90-kexecfw-kdump.install"):
        assert (root / rel).stat().st_mode & 0o111, rel
    _built(root, OLD)
    assert kdump(root, "load").returncode == 0
    (root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    assert json.loads((root / "var/lib/kexecfw/kdump/loaded.json").read_text())["kernel"] == f"/boot/vmlinuz-{OLD}"

    # the package of NEW runs the postinst hook while OLD runs: NEW's initrd is built, nothing is reloaded
    before = len(recorded(root))
    _run_hook(root, tmp_path, postinst_hook(_kexecfw_on(root)), NEW, f"/boot/vmlinuz-{NEW}")
    new = recorded(root)[before:]
    assert [a["argv"][:2] + a["argv"][-1:] for a in new] == [["mkinitramfs", "-d", NEW]]
    _built(root, NEW)
    current = [c for c in json.loads(kdump(root, "status", "--json").stdout)["checks"] if c["check"] == "loaded"]
    assert current[0]["ok"], current

    # the reboot into NEW: OLD's record does not describe a panic kernel loaded by another tool in this boot
    _boot(root, NEW)
    (root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    check = [c for c in json.loads(kdump(root, "status", "--json").stdout)["checks"] if c["check"] == "loaded"][0]
    assert not check["ok"] and "in this boot (its record is from an earlier one)" in check["detail"]
    # the load unit loads NEW's kernel with NEW's initrd, without rebuilding
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    status = json.loads(kdump(root, "status", "--json").stdout)
    assert status["capture"]["kernel"] == f"/boot/vmlinuz-{NEW}"
    assert [c["ok"] for c in status["checks"] if c["check"] in ("kernel", "initrd")] == [True, True]
    before = len(recorded(root))
    loaded = kdump(root, "load", "--json")
    assert loaded.returncode == 0, loaded.stderr
    doc = json.loads(loaded.stdout)
    assert (doc["release"], doc["kernel"], doc["initrd"]) == (NEW, f"/boot/vmlinuz-{NEW}", initrd_path(NEW))
    load = [a for a in recorded(root)[before:] if a["action"] == "load-panic"]
    assert len(load) == 1 and load[0]["kernel"] == str(root / f"boot/vmlinuz-{NEW}")
    assert "mkinitramfs" not in [a.get("argv", [""])[0] for a in recorded(root)[before:]]
    (root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    assert [c for c in json.loads(kdump(root, "status", "--json").stdout)["checks"]
            if c["check"] == "loaded"][0]["ok"]

    # kernel-install's plugin for the running kernel: its initrd is current (no build), and it reloads
    before = len(recorded(root))
    _run_hook(root, tmp_path, install_plugin(_kexecfw_on(root)), "add", NEW, "/boot/efi/x", f"/boot/vmlinuz-{NEW}")
    assert [a["action"] for a in recorded(root)[before:]] == ["unload-panic", "load-panic", "write"]

    # removing OLD removes its capture initrd (postrm hook; kernel-install's remove does the same)
    _run_hook(root, tmp_path, postrm_hook(), OLD)
    assert not (root / initrd_path(OLD).lstrip("/")).exists()
    assert not (root / manifest_path(OLD).lstrip("/")).exists()
    assert (root / initrd_path(NEW).lstrip("/")).exists()
    _built(root, OLD)
    _run_hook(root, tmp_path, install_plugin(_kexecfw_on(root)), "remove", OLD, "/boot/efi/x")
    assert not (root / initrd_path(OLD).lstrip("/")).exists()


def test_a_new_build_of_the_same_release_is_a_rebuild(root):
    """Debian can ship a new image under the same ABI release: the manifest's kernel hash sees it, an
    mtime would not have to."""
    _two_kernels(root)
    _built(root, OLD)
    image = root / f"boot/vmlinuz-{OLD}"
    stamp = image.stat().st_mtime
    shutil.copy(root / f"boot/vmlinuz-{NEW}", image)
    os.utime(image, (stamp, stamp))                  # same mtime, other content
    check = [c for c in json.loads(kdump(root, "status", "--json").stdout)["checks"] if c["check"] == "initrd"][0]
    assert not check["ok"] and f"(/boot/vmlinuz-{OLD} changed)" in check["detail"]
    before = len(recorded(root))
    assert kdump(root, "load").returncode == 0
    assert recorded(root)[before]["argv"][0] == "mkinitramfs"


def test_a_configured_kernel_is_loaded_whatever_runs(root):
    """capture.kernel set: that kernel, with a capture initrd built for its release (its modules), not the
    running one's."""
    _two_kernels(root)
    (root / "etc/kexecfw").mkdir(parents=True)
    (root / "etc/kexecfw/kdump.toml").write_text(f'[capture]\nkernel = "/boot/vmlinuz-{OLD}"\n')
    _built(root, OLD)
    _boot(root, NEW)
    loaded = kdump(root, "load", "--json")
    assert loaded.returncode == 0, loaded.stderr
    doc = json.loads(loaded.stdout)
    assert (doc["release"], doc["kernel"], doc["initrd"]) == (OLD, f"/boot/vmlinuz-{OLD}", initrd_path(OLD))
    assert "mkinitramfs" not in [a.get("argv", [""])[0] for a in recorded(root)]


def test_a_hook_that_cannot_build_does_not_fail_the_kernel_install(root, tmp_path):
    """The kernel's installation goes on (the hook exits 0), says why, and the next boot's load builds."""
    _two_kernels(root)
    done = _run_hook(root, tmp_path, postinst_hook(_kexecfw_on(root)), "6.1.0-99-cloud-amd64",
                     "/boot/vmlinuz-6.1.0-99-cloud-amd64")
    lines = done.stderr.splitlines()
    assert lines == ["kexecfw: error: no /lib/modules/6.1.0-99-cloud-amd64 on this system: install the kernel's "
                     "package (linux-image-6.1.0-99-cloud-amd64) before `kexecfw kdump rebuild`",
                     "kexecfw kdump: could not build the capture initrd for 6.1.0-99-cloud-amd64; the next boot's "
                     "load builds it"], done.stderr
    assert recorded(root) == []
