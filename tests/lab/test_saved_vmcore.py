"""lab run --save-vmcore: the capture kernel's raw /proc/vmcore comes back as dump/vmcore.elf, 0600 like
every dump (it is the guest's whole memory), cut to the size the capture kernel reported."""
from __future__ import annotations

import stat
from pathlib import Path

from kexecfw.lab.runner import _keep_vmcore


def results_with_copy(tmp_path: Path, copy_rc: int) -> tuple[Path, Path]:
    """A results directory whose capture kernel copied /proc/vmcore (4 KiB) with exit code ``copy_rc``,
    and the raw disk it copied to (8 KiB, created world-readable as QEMU's disks are)."""
    out = tmp_path / "results"
    (out / "capture").mkdir(parents=True)
    (out / "capture" / "vmcore-size").write_text("4096\n")
    (out / "capture" / "steps.txt").write_text(f"vmcore-headers 0 1.0 1.1\nvmcore-copy {copy_rc} 1.1 9.0\n")
    disk = tmp_path / "vmcore.img"
    disk.write_bytes(b"\x7fELF" + b"\xaa" * 8188)
    disk.chmod(0o644)
    return out, disk


def test_the_saved_vmcore_is_0600_and_cut_to_size(tmp_path):
    out, disk = results_with_copy(tmp_path, 0)
    _keep_vmcore(disk, out)
    saved = out / "dump" / "vmcore.elf"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert saved.read_bytes() == b"\x7fELF" + b"\xaa" * 4092
    assert not disk.exists()


def test_a_failed_copy_is_not_kept(tmp_path):
    out, disk = results_with_copy(tmp_path, 1)
    _keep_vmcore(disk, out)
    assert not (out / "dump").exists() and disk.exists()
