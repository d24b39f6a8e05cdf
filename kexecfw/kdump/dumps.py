"""The dumps on the target and the target itself: where it is, is it writable, how much room it has.

A dump is a crash directory made by ``kexecfw vmcore save --dir`` (kexecfw.vmcore.save):
``<UTC YYYYmmdd-HHMMSS>/`` with dmesg.txt (written first), the dump (vmcore.kdump, vmcore.elf, or
``.incomplete`` when not every page was saved) and summary.json (written last). A directory without
summary.json is a save that never finished: incomplete too.
"""
from __future__ import annotations

import calendar
import json
import os
import re
import time
from dataclasses import dataclass

STAMP = re.compile(r"^(\d{8}-\d{6})(-\d+)?$")
DUMP_NAMES = ("vmcore.kdump", "vmcore.elf")
SUMMARY_MAX = 1 << 20
DMESG_TAIL = 256 << 10         # the panic line is near the end of the log
DUMPS_MAX = 10000              # a crash directory listing, bounded


@dataclass(frozen=True)
class Dump:
    name: str
    directory: str
    time: int                   # UTC epoch from the directory's name
    release: str | None
    panic: str | None
    size: int
    complete: bool
    why_incomplete: str | None

    def to_json(self) -> dict:
        return {"name": self.name, "directory": self.directory,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)), "epoch": self.time,
                "release": self.release, "panic": self.panic, "size": self.size, "complete": self.complete,
                "why_incomplete": self.why_incomplete}


def local_target(root, config) -> tuple[str | None, str]:
    """The dump directory as a path on this machine (through ``root``), or None and why not."""
    if config.ssh is not None:
        return None, f"ssh target {config.ssh.user}@{config.ssh.host}: the ssh transfer is not implemented yet"
    if config.device:
        mount = mount_point(root, config.device)
        if mount is None:
            return None, f"{config.device} is not mounted here (the capture boot mounts it to save)"
        return str(root.path(os.path.join(mount, config.path.lstrip("/")))), f"on {config.device} at {mount}"
    return str(root.path(config.path)), "on the root filesystem"


def device_node(device: str) -> str:
    """/dev/disk/by-uuid/X or /dev/disk/by-label/X for "UUID=X" / "LABEL=X"."""
    kind, _, value = device.partition("=")
    return f"/dev/disk/by-{kind.lower()}/{value}"


def mount_point(root, device: str) -> str | None:
    """Where the filesystem ``device`` is mounted according to the root's proc/mounts, if anywhere."""
    node = root.path(device_node(device))
    try:
        real = os.path.realpath(node) if node.exists() else None
    except OSError:
        real = None
    text = root.read_optional("proc/mounts") or ""
    for line in text.splitlines()[:DUMPS_MAX]:
        parts = line.split()
        if len(parts) >= 2 and real is not None and parts[0] in (real, str(node), device_node(device)):
            return parts[1].replace("\\040", " ")
    return None


def _stamp_time(name: str) -> int | None:
    m = STAMP.match(name)
    if not m:
        return None
    try:
        return calendar.timegm(time.strptime(m[1], "%Y%m%d-%H%M%S"))
    except ValueError:
        return None


def panic_line(dmesg: bytes) -> str | None:
    """The line of the log that says why the kernel crashed, as `vmcore info` names it (the panic
    line, else the oops/BUG line), without its timestamp."""
    from kexecfw.vmcore.prstatus import panic_report
    report = panic_report(dmesg)
    return report.line[:300] if report else None


def read_dump(directory: str) -> Dump | None:
    """The crash directory ``directory`` as a Dump, or None when it is not one kexecfw makes."""
    name = os.path.basename(directory)
    when = _stamp_time(name)
    if when is None or not os.path.isdir(directory):
        return None
    summary = None
    try:
        with open(os.path.join(directory, "summary.json"), "rb") as f:
            summary = json.loads(f.read(SUMMARY_MAX))
    except (OSError, ValueError):
        pass
    if not isinstance(summary, dict):
        summary = None
    dmesg = b""
    try:
        with open(os.path.join(directory, "dmesg.txt"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - DMESG_TAIL))
            dmesg = f.read(DMESG_TAIL)
    except OSError:
        pass
    size = 0
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
            size += entry.stat(follow_symlinks=False).st_size
    dump_files = [n for n in DUMP_NAMES if os.path.isfile(os.path.join(directory, n))]
    why = None
    if summary is None:
        why = "no summary.json: the save did not finish"
    elif not summary.get("complete"):
        why = str(summary.get("failed") or "summary.json says incomplete")[:300]
    elif not dump_files:
        why = "summary.json says complete but no dump file is there"
    release = summary.get("osrelease") if summary else None
    return Dump(name=name, directory=directory, time=when, release=release if isinstance(release, str) else None,
                panic=panic_line(dmesg), size=size, complete=why is None, why_incomplete=why)


def list_dumps(directory: str) -> list[Dump]:
    """The crash directories in ``directory``, oldest first."""
    try:
        names = sorted(n for n in os.listdir(directory) if STAMP.match(n))[-DUMPS_MAX:]
    except FileNotFoundError:
        return []
    dumps = [read_dump(os.path.join(directory, n)) for n in names]
    return [d for d in dumps if d is not None]


def free_space(directory: str) -> tuple[int | None, bool]:
    """(bytes free, writable) of ``directory``, or of its nearest existing parent (save creates the
    rest); (None, False) when none can be examined."""
    path = directory
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None, False
        path = parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None, False
    return st.f_bavail * st.f_frsize, os.access(path, os.W_OK)
