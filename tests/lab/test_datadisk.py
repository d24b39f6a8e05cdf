"""Getting data out of a guest: tar archives written at MiB offsets of a raw disk, as the guest's dd does."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kexecfw.lab.datadisk import SLOTS, create_disk, read_slot
from kexecfw.lab.errors import LabError


def _guest_style_write(src: Path, disk: Path, seek_mib: int) -> None:
    """What guest/init does: tar -cf - -C /out . | dd of=DISK bs=1M seek=N conv=fsync."""
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(src), "."], stdout=subprocess.PIPE)
    subprocess.run(["dd", f"of={disk}", "bs=1M", f"seek={seek_mib}", "conv=fsync,notrunc", "status=none"],
                   stdin=tar.stdout, check=True)
    assert tar.wait() == 0


@pytest.mark.skipif(shutil.which("tar") is None or shutil.which("dd") is None, reason="needs tar and dd")
def test_two_slots_round_trip(tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "data.img", 256)
    assert disk.stat().st_size == 256 << 20
    first = tmp_path / "first"
    (first / "snapshot/proc").mkdir(parents=True)
    (first / "snapshot/proc/iomem").write_text("40000000-bfffffff : System RAM\n")
    blob = bytes(range(256)) * 5000
    (first / "first").mkdir()
    (first / "first/blob.bin").write_bytes(blob)
    second = tmp_path / "second"
    (second / "capture").mkdir(parents=True)
    (second / "capture/vmcore-size").write_text("838938624\n")
    _guest_style_write(first, disk, SLOTS["first"])
    _guest_style_write(second, disk, SLOTS["second"])
    out = tmp_path / "out"
    names = read_slot(disk, SLOTS["first"], out)
    assert names and "./snapshot/proc/iomem" in names
    assert read_slot(disk, SLOTS["second"], out)
    assert (out / "first/blob.bin").read_bytes() == blob
    assert (out / "snapshot/proc/iomem").read_text().startswith("40000000")
    assert (out / "capture/vmcore-size").read_text() == "838938624\n"


def test_unwritten_slot_is_none(tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "data.img", 256)
    assert read_slot(disk, SLOTS["second"], tmp_path / "out") is None


def test_damaged_slot_is_a_clear_error(tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "data.img", 4)
    with open(disk, "r+b") as f:
        f.write(b"this is not a tar header" * 30)
    with pytest.raises(LabError, match="damaged"):
        read_slot(disk, 0, tmp_path / "out")


def test_member_escaping_the_results_dir_is_refused(tmp_path: Path) -> None:
    import io
    import tarfile
    disk = create_disk(tmp_path / "data.img", 4)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with open(disk, "r+b") as f:
        f.write(buf.getvalue())
    with pytest.raises((LabError, tarfile.TarError)):
        read_slot(disk, 0, tmp_path / "out")
    assert not (tmp_path / "escape").exists()
