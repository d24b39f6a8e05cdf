"""Full-OS guests (kexecfw.lab.fullos, fullos_guest): the image recipe, the script and results disks, the
boot's deadlines; and (slow) a real boot of the cached Debian 12 image with kexecfw installed in it."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from kexecfw.lab.errors import LabError
from kexecfw.lab.fullos import BASE_PACKAGES, UNUSED_DAYS, ImageRecipe, _prune_unused, make_ext4
from kexecfw.lab.fullos_guest import AgentRun, read_ext4_dir, script_disk
from kexecfw.lab.qemu import Disk, qemu_command, run_qemu
from kexecfw.lab.targets import arch_target

needs_e2fsprogs = pytest.mark.skipif(not (shutil.which("mkfs.ext4") and shutil.which("debugfs")),
                                     reason="needs e2fsprogs (mkfs.ext4, debugfs)")


def test_recipe_key_follows_packages_not_requirements() -> None:
    base = ImageRecipe(arch="x86_64", requirements=("pluggy>=1.5",))
    assert base.key() == ImageRecipe(arch="amd64", requirements=("pluggy>=1.5",)).key()
    assert "linux-image-cloud-amd64" in base.packages() and set(BASE_PACKAGES) <= set(base.packages())
    assert "kdump-tools" not in ImageRecipe(extra_packages=("kdump-tools",)).packages()   # installed after
    with_kdump_tools = ImageRecipe(arch="x86_64", extra_packages=("kdump-tools",), requirements=("pluggy>=1.5",))
    other_reqs = ImageRecipe(arch="x86_64", requirements=("pluggy>=1.6",))
    arm64 = ImageRecipe(arch="arm64", requirements=("pluggy>=1.5",))
    preseeded = ImageRecipe(arch="x86_64", extra_packages=("kdump-tools",), requirements=("pluggy>=1.5",),
                            debconf=("kexec-tools kexec-tools/load_kexec boolean false",))
    keys = {r.key() for r in (base, with_kdump_tools, arm64, preseeded)}
    assert len(keys) == 4
    # a new Python dependency of kexecfw keeps the image: each run's first boot installs it (dependency_wheels)
    assert other_reqs.key() == base.key()
    assert base.directory(Path("/c")) == Path("/c/fullos/bookworm-amd64") / base.key()
    assert arm64.directory(Path("/c")).parent.name == "bookworm-arm64"


def test_images_unused_for_two_weeks_are_pruned(tmp_path: Path) -> None:
    shelf = tmp_path / "fullos" / "bookworm-amd64"
    keep, recent, stale, broken, partial = (shelf / n for n in ("k1", "k2", "k3", "k4", ".partial-k5"))
    for d in (keep, recent, stale, partial):
        d.mkdir(parents=True)
        (d / "manifest.json").write_text("{}")
    broken.mkdir()   # a build killed before its rename leaves no manifest
    old = time.time() - (UNUSED_DAYS + 1) * 86400
    os.utime(stale / "manifest.json", (old, old))
    os.utime(keep / "manifest.json", (old, old))
    _prune_unused(keep)
    assert sorted(p.name for p in shelf.iterdir()) == [".partial-k5", "k1", "k2"]


def test_recipe_requirements_are_kexecfws_runtime_ones() -> None:
    reqs = ImageRecipe().requirements
    names = {r.split(">")[0].split("=")[0] for r in reqs}
    assert {"pluggy", "pyelftools", "fdt", "zstandard", "lz4"} <= names
    assert not any("extra" in r for r in reqs)


@needs_e2fsprogs
def test_script_disk_holds_run_sh_and_files(tmp_path: Path) -> None:
    wheel = tmp_path / "kexecfw-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))
    disk = script_disk(tmp_path / "script.img", "lab_step hello echo hi\n",
                       {"wheels/" + wheel.name: wheel, "data/blob": b"\x00\x01binary"})
    back = read_ext4_dir(disk, "/", tmp_path / "back")
    assert back is not None
    root = tmp_path / "back"
    assert (root / "run.sh").read_text() == "lab_step hello echo hi\n"
    assert (root / "agent.sh").read_bytes().startswith(b"#!/bin/sh")
    assert (root / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    assert (root / "data" / "blob").read_bytes() == b"\x00\x01binary"


@needs_e2fsprogs
def test_script_disk_refuses_a_path_outside_it(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="outside the disk"):
        script_disk(tmp_path / "s.img", "true\n", {"../escape": b"x"})


@needs_e2fsprogs
def test_results_disk_read_back_as_agent_runs(tmp_path: Path) -> None:
    # The layout fullos-agent writes: runs/N/{rc,cmdline,steps.txt,steps/NAME.{out,err,rc,uptime}}
    tree = tmp_path / "tree"
    run = tree / "runs" / "1"
    (run / "steps").mkdir(parents=True)
    (run / "rc").write_text("0\n")
    (run / "cmdline").write_text("root=/dev/vda rw console=ttyS0 crashkernel=256M\n")
    (run / "steps.txt").write_text("status\nbroken\n")
    for name, rc, out, times in (("status", 0, "armed: no\n", "20.50 23.75"), ("broken", 127, "", "24.00 24.01")):
        (run / "steps" / f"{name}.rc").write_text(f"{rc}\n")
        (run / "steps" / f"{name}.out").write_text(out)
        (run / "steps" / f"{name}.err").write_text("" if rc == 0 else "sh: nope: not found\n")
        (run / "steps" / f"{name}.uptime").write_text(times + "\n")
    image = make_ext4(tmp_path / "results.img", 16, tree, label="labresults")
    assert read_ext4_dir(image, "/missing", tmp_path / "out") is None
    runs = read_ext4_dir(image, "/runs", tmp_path / "out")
    assert runs == tmp_path / "out" / "runs"
    agent = AgentRun(runs / "1")
    assert agent.rc == 0 and "crashkernel=256M" in agent.cmdline
    assert agent.steps() == ["status", "broken"]
    status = agent.step("status")
    assert (status.rc, status.out, status.seconds) == (0, "armed: no\n", 3.25)
    assert agent.step("broken").rc == 127 and "not found" in agent.step("broken").err
    with pytest.raises(LabError, match="no step 'absent'.*status, broken"):
        agent.step("absent")


def test_qemu_command_with_overlay_and_user_network(tmp_path: Path) -> None:
    arch = arch_target("x86_64")
    cmd = qemu_command(arch, tmp_path / "vmlinuz", tmp_path / "initrd.img", "root=/dev/vda rw", 1024, 2,
                       [Disk(tmp_path / "root.qcow2", "root", format="qcow2"), Disk(tmp_path / "s.img", "labscript")],
                       "tcg", network=True)
    drives = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-drive"]
    assert drives[0].startswith(f"file={tmp_path / 'root.qcow2'},format=qcow2,")
    assert ",format=raw," in drives[1]
    assert cmd[cmd.index("-nic") + 1] == "user,model=virtio-net-pci"
    assert "-nic" not in qemu_command(arch, tmp_path / "k", None, "", 256, 1, [], "tcg")


def test_run_qemu_ends_a_boot_that_misses_its_deadline(tmp_path: Path) -> None:
    # A real process standing in for QEMU: it prints an early mark, then never the awaited one.
    cmd = [sys.executable, "-c", "import time; print('LABAGENT booting', flush=True); time.sleep(60)"]
    outcome = run_qemu(cmd, tmp_path / "console.log", timeout=60, silence=60, deadlines={"LABAGENT start": 1.0})
    assert outcome.ended_by == "deadline:LABAGENT start"
    assert outcome.seconds < 10
    assert [line for _, line in outcome.host_marks] == ["LABAGENT booting"]


MARK_DIR = "/var/lib/kexecfw-lab"
MARK_FILE = f"{MARK_DIR}/boot_id"


@pytest.fixture(scope="module")
def fullos_guest(tmp_path_factory: pytest.TempPathFactory):
    """The cached Debian 12 x86_64 image (built on first use, a few minutes) and its first boot: kexecfw
    installed from this checkout, run through the agent; the boot leaves a mark on the root disk."""
    from kexecfw.lab.fullos import base_image
    from kexecfw.lab.fullos_guest import FullOsGuest

    image = base_image(ImageRecipe(arch="x86_64"))
    guest = FullOsGuest(image, tmp_path_factory.mktemp("fullos") / "run")
    boot = guest.boot("lab_step running timeout 300 systemctl is-system-running --wait\n"
                      "lab_step status /opt/kexecfw/bin/kexecfw status --json\n"
                      "lab_step vmcore-help /opt/kexecfw/bin/kexecfw vmcore --help\n"
                      "lab_step uname uname -r\n"
                      f"mkdir -p {MARK_DIR} && cp /proc/sys/kernel/random/boot_id {MARK_FILE}\n",
                      append="crashkernel=192M", timeout=600)
    print(json.dumps({"qemu_seconds": boot.outcome.seconds, "agent_seconds": boot.agent_seconds,
                      "marks": boot.marks()}, indent=1))
    return guest, boot


@pytest.mark.slow
def test_fullos_guest_boots_and_runs_kexecfw(fullos_guest) -> None:
    guest, boot = fullos_guest
    assert boot.outcome.ended_by == "exit", boot.outcome.tail()
    run = boot.run(1)
    assert run.rc == 0
    assert run.step("install-kexecfw").rc == 0, run.step("install-kexecfw").err
    assert run.step("running").out.strip() in ("running", "degraded")
    # Nothing loaded yet: exit 1 like kexec -S; the reservation comes from this boot's command line.
    status = run.step("status")
    assert status.rc == 1, status.err
    assert json.loads(status.out) == {"schema": 1, "loaded": False, "crash_loaded": False,
                                      "crash_size": hex(192 << 20)}
    help_ = run.step("vmcore-help")
    assert help_.rc == 0 and "usage:" in help_.out and "vmcore" in help_.out
    assert run.step("uname").out.strip() == guest.image.release
    assert "root=/dev/vda" in run.cmdline and "crashkernel=192M" in run.cmdline


# The capture boot sources the same run.sh: /proc/vmcore tells the two kernels apart.
KDUMP_CYCLE = f"""
if [ -e /proc/vmcore ]; then
    lab_step info /opt/kexecfw/bin/kexecfw vmcore info --json
    lab_step dmesg /opt/kexecfw/bin/kexecfw vmcore dmesg
else
    lab_step mark cat {MARK_FILE}
    lab_step load /opt/kexecfw/bin/kexecfw load -p /boot/vmlinuz-$(uname -r) --initrd /boot/initrd.img-$(uname -r) \\
        --append "root=/dev/vda rw console=ttyS0 no_timer_check reset_devices nr_cpus=1 irqpoll panic=-1"
    lab_next crash
fi
"""


@pytest.mark.slow
def test_fullos_guest_next_boot_keeps_the_disk_and_captures_a_crash(fullos_guest) -> None:
    """Boot 2 of the same guest: a panic load of the image's own kernel and initrd, sysrq-c, and the capture
    kernel boots the real root with systemd, where the agent runs the same script again (runs/2)."""
    guest, first = fullos_guest
    boot = guest.boot(KDUMP_CYCLE, append="crashkernel=256M", timeout=900,
                      deadlines={"LABAGENT start run=2": 600})
    assert boot.outcome.ended_by == "exit", boot.outcome.tail()
    first_kernel, capture = boot.run(1), boot.run(2)
    assert first_kernel.steps() == ["mark", "load"]   # kexecfw was installed once, by the run's first boot
    first_boot_id = (first.run(1).path / "boot_id").read_text().strip()
    assert first_kernel.step("mark").out.strip() == first_boot_id
    assert first_kernel.step("load").rc == 0, first_kernel.step("load").err
    assert [line for _, line in boot.marks("LABAGENT done")] == [
        "LABAGENT done run=1 rc=0 next=crash", "LABAGENT done run=2 rc=0 next=poweroff"]
    assert capture.steps() == ["info", "dmesg"] and "elfcorehdr=" in capture.cmdline
    info = json.loads(capture.step("info").out)
    assert guest.image.release in json.dumps(info)
    assert "Kernel panic - not syncing: sysrq triggered crash" in capture.step("dmesg").out
    # The host reads the guest's root disk as the boots left it, without booting it again.
    copied = guest.read_root(MARK_DIR, guest.dir / "root-copy")
    assert copied is not None and (copied / "boot_id").read_text().strip() == first_boot_id
    assert guest.read_root("/var/crash-absent", guest.dir / "root-copy") is None
