"""The guest's way out for data: a raw virtio-blk disk holding tar archives at fixed offsets.

The guest writes ``tar -cf - -C /out . | dd of=DISK seek=MIB`` (works in any
kernel with virtio-blk, at full speed, binary-safe); the host reads each slot
back with :mod:`tarfile` after QEMU exits. A slot the guest never wrote is
all zeros.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

from kexecfw.lab.errors import LabError

MIB = 1 << 20
# MiB offsets; must match SLOT2_MIB, DUMP1_MIB, DUMP2_MIB, DUMP3_MIB in guest/init. The guest's /out
# tmpfs (128 MiB) bounds what the first two slots receive; a dump slot holds up to 512 MiB.
SLOTS = {"first": 0, "second": 128, "dump-kexecfw": 512, "dump-makedumpfile": 1024, "dump-kexecfw-zstd": 1536}
DISK_MIB = 2048


def create_disk(path: Path, size_mib: int = DISK_MIB) -> Path:
    """A sparse, zeroed raw disk image."""
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    return path


def read_slot(disk: Path, offset_mib: int, dest: Path) -> list[str] | None:
    """Extract the tar at offset_mib into dest; None if the guest never wrote it."""
    try:
        f = open(disk, "rb")
    except OSError as e:
        raise LabError(f"cannot read the data disk {disk}: {e.strerror}") from None
    with f:
        f.seek(offset_mib * MIB)
        head = f.read(512)
        if not head.strip(b"\0"):
            return None
        f.seek(offset_mib * MIB)
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                members = tar.getmembers()
                dest.mkdir(parents=True, exist_ok=True)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, members=members, filter="data")
                else:  # pragma: no cover - Pythons without PEP 706
                    safe = [m for m in members if not os.path.isabs(m.name) and ".." not in m.name.split("/")]
                    tar.extractall(dest, members=safe)
        except tarfile.TarError as e:
            raise LabError(f"the data disk's archive at {offset_mib} MiB is damaged ({e}): "
                           "the guest was probably cut off while writing it") from None
    return [m.name for m in members]
