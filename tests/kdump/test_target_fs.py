"""Filesystem targets for real: a loop-mounted ext4 image found by UUID and by LABEL (blkid), mounted
for the save at a private mount point and unmounted after it; a device that never appears (bounded
wait, then the failure action); a target that fills up (a size-limited tmpfs): the log is still saved,
the dump is marked incomplete, the summary says so and the failure action still comes."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import oracle, oracle_missing
from tests.kdump.conftest import kdump, recorded


def _mounts() -> str:
    return Path("/proc/mounts").read_text()


@pytest.fixture
def ext4(tmp_path):
    """(loop device, UUID, LABEL) of a fresh 16 MiB ext4 image; detached afterwards."""
    mkfs = oracle("mkfs.ext4", "e2fsprogs")
    losetup = oracle("losetup", "mount")
    oracle("blkid", "util-linux")
    image = tmp_path / "target.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    fs_uuid, label = str(uuid.uuid4()), f"kx{uuid.uuid4().hex[:10]}"
    subprocess.run([mkfs, "-q", "-F", "-L", label, "-U", fs_uuid, str(image)], check=True)
    attached = subprocess.run([losetup, "-f", "--show", str(image)], capture_output=True, text=True)
    if attached.returncode != 0:
        oracle_missing("loop devices (losetup -f)", f"a host with loop devices as root: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    try:
        yield device, fs_uuid, label
    finally:
        subprocess.run([losetup, "-d", device], check=False)


def _config(root: Path, target: str) -> None:
    (root / "etc/kexecfw").mkdir(parents=True, exist_ok=True)
    (root / "etc/kexecfw/kdump.toml").write_text(
        f'[target]\n{target}\n[dump]\nmin_free = "0"\n[actions]\nfinal = "poweroff"\nfailure = "shell"\n')


def test_uuid_and_label_targets_are_mounted_for_the_save(root, tmp_path, ext4, mini_vmcores, expected_dmesg):
    device, fs_uuid, label = ext4
    mount_point = root / "run/kexecfw-kdump/target"
    for spec in (f"UUID={fs_uuid}", f"LABEL={label}"):
        _config(root, f'device = "{spec}"\npath = "/crash"\nwait = 5')
        saved = kdump(root, "save", "--vmcore", str(mini_vmcores["arm64"]), "--json")
        assert saved.returncode == 0, saved.stderr
        doc = json.loads(saved.stdout)
        assert doc["target"] == f"{mount_point}/crash" and doc["action"] == "poweroff"
        assert str(mount_point) not in _mounts()          # unmounted after the save
    assert not list(mount_point.iterdir())                # nothing was written beside the filesystem
    listed = kdump(root, "list", "--json")                # mounted for the listing, then unmounted
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["target"] == f"/crash (on LABEL={label}, mounted for this look)"
    assert [d["complete"] for d in doc["dumps"]] == [True, True] and str(mount_point) not in _mounts()
    assert doc["dumps"][0]["panic"] == "Kernel panic - not syncing: sysrq triggered crash"
    status = json.loads(kdump(root, "status", "--json").stdout)     # not mounted here: mounted for the look
    target = next(c for c in status["checks"] if c["check"] == "target")
    assert target["ok"] and target["detail"].startswith(f"LABEL={label}:/crash (on LABEL={label}, mounted for this "
                                                         "look): writable, "), target
    assert len(status["dumps"]) == 2 and str(mount_point) not in _mounts()
    look = tmp_path / "look"
    look.mkdir()
    subprocess.run(["mount", "-o", "ro", device, str(look)], check=True)
    try:
        dumps = sorted((look / "crash").iterdir())
        assert len(dumps) == 2
        for d in dumps:
            assert sorted(p.name for p in d.iterdir()) == ["dmesg.txt", "summary.json", "vmcore.kdump"]
            assert (d / "dmesg.txt").read_bytes() == expected_dmesg["arm64"]
            assert json.loads((d / "summary.json").read_text())["complete"] is True
    finally:
        subprocess.run(["umount", str(look)], check=True)


def test_missing_device_waits_then_fails(root, mini_vmcores):
    oracle("blkid", "util-linux")
    missing = str(uuid.uuid4())
    _config(root, f'device = "UUID={missing}"\nwait = 2')
    t0 = time.monotonic()
    failed = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
    took = time.monotonic() - t0
    assert failed.returncode == 1
    doc = json.loads(failed.stdout)
    assert doc["error"] == (f"target UUID={missing}: no such filesystem after waiting 2 s (not in "
                            f"/dev/disk/by-uuid/{missing}, not found by blkid): is its disk attached?")
    assert 2 <= took < 60 and doc["action"] == "shell"
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "isolate", "emergency.target"]


def test_full_target_keeps_the_log_and_marks_the_dump_incomplete(root, mini_vmcores, expected_dmesg):
    small = root / "small"        # /small on the system acted on: a 192 KiB tmpfs, less than the dump
    small.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k,mode=0700", "kexecfw-test", str(small)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        oracle_missing("a tmpfs mount", f"root with mount rights: {made.stderr.strip()}")
    try:
        _config(root, 'path = "/small"')
        failed = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
        assert failed.returncode == 6, failed.stderr
        doc = json.loads(failed.stdout)
        # the writer stops at the free space it measured, before the disk would refuse a write
        full = "the dump reached the free space it may use"
        assert full in doc["error"] and "marked incomplete" in doc["error"]
        assert doc["action"] == "shell" and recorded(root)[-1]["argv"][-1] == "emergency.target"
        (crash,) = list(small.iterdir())
        assert sorted(p.name for p in crash.iterdir()) == ["dmesg.txt", "summary.json", "vmcore.kdump.incomplete"]
        assert (crash / "dmesg.txt").read_bytes() == expected_dmesg["x86_64"]
        summary = json.loads((crash / "summary.json").read_text())
        assert summary["complete"] is False and full in summary["failed"]
        assert 0 < summary["dump"]["pages_written"] < summary["dump"]["pages_planned"]
        listed = json.loads(kdump(root, "list", "--json").stdout)["dumps"]
        assert len(listed) == 1 and not listed[0]["complete"] and full in listed[0]["why_incomplete"]
    finally:
        subprocess.run(["umount", str(small)], check=True)
