"""The dumps on the target and the target itself: where it is, is it writable, how much room it has.

A dump is a crash directory made by ``kexecfw kdump save`` (kexecfw.kdump.save) or ``kexecfw vmcore
save --dir``: ``<UTC YYYYmmdd-HHMMSS>/`` (``<UTC time>-<host>/`` on an ssh target) with dmesg.txt
(written first), the dump (vmcore.kdump, vmcore.elf, vmcore.flat on an ssh target, or
``.incomplete`` when not every page was saved or sent) and summary.json (written last). A directory
without summary.json is a save that never finished: incomplete too.
"""
from __future__ import annotations

import calendar
import json
import os
import re
import time
from contextlib import contextmanager

from kexecfw.records import Record

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the capture boot does not import typing
if TYPE_CHECKING:
    from typing import Iterator

# <UTC time>[-N], then -<host> on an ssh target (several machines may share its directory)
STAMP = re.compile(r"^(\d{8}-\d{6})(-\d+)?(-[A-Za-z0-9][A-Za-z0-9.-]*)?$")
DUMP_NAMES = ("vmcore.kdump", "vmcore.elf", "vmcore.flat")
SUMMARY_MAX = 1 << 20
DMESG_TAIL = 256 << 10         # the panic line is near the end of the log
DUMPS_MAX = 10000              # a crash directory listing, bounded
LISTING_MAX = 4 << 20          # what an ssh target may send back for a listing (cut there by the host's head)
TAR_MAX = 48 << 20             # and for the summaries and logs of its dumps


class Dump(Record, frozen=True):
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
        return None, f"ssh target {config.ssh.user}@{config.ssh.host}:{config.path} (not a directory here)"
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


def describe(name: str, where: str, summary_data: bytes | None, dmesg_tail: bytes,
             files: dict[str, int]) -> Dump | None:
    """The crash directory ``name`` (shown as ``where``) from what it holds: its summary.json (None
    when absent), the end of its dmesg.txt and its files with their sizes; None when the name is not
    one kexecfw makes."""
    when = _stamp_time(name)
    if when is None:
        return None
    summary = None
    if summary_data is not None:
        try:
            summary = json.loads(summary_data[:SUMMARY_MAX])
        except ValueError:
            pass
    if not isinstance(summary, dict):
        summary = None
    dump_files = [n for n in DUMP_NAMES if n in files]
    why = None
    if summary is None:
        why = "no summary.json: the save did not finish"
    elif not summary.get("complete"):
        why = str(summary.get("failed") or "summary.json says incomplete")[:300]
    elif not dump_files:
        why = "summary.json says complete but no dump file is there"
    release = summary.get("osrelease") if summary else None
    return Dump(name=name, directory=where, time=when, release=release if isinstance(release, str) else None,
                panic=panic_line(dmesg_tail), size=sum(files.values()), complete=why is None, why_incomplete=why)


def read_dump(directory: str) -> Dump | None:
    """The crash directory ``directory`` as a Dump, or None when it is not one kexecfw makes."""
    name = os.path.basename(directory)
    if _stamp_time(name) is None or not os.path.isdir(directory):
        return None
    summary = None
    try:
        with open(os.path.join(directory, "summary.json"), "rb") as f:
            summary = f.read(SUMMARY_MAX)
    except OSError:
        pass
    dmesg = b""
    try:
        with open(os.path.join(directory, "dmesg.txt"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - DMESG_TAIL))
            dmesg = f.read(DMESG_TAIL)
    except OSError:
        pass
    files = {entry.name: entry.stat(follow_symlinks=False).st_size for entry in os.scandir(directory)
             if entry.is_file(follow_symlinks=False)}
    return describe(name, directory, summary, dmesg, files)


def remote_dumps(ssh, base: str) -> list[Dump]:
    """The crash directories in ``base`` on an ssh target (kexecfw.kdump.ssh.Ssh), oldest first: one
    listing of their files with sizes, then one tar of their summary.json and dmesg.txt."""
    import io
    import tarfile

    from kexecfw.kdump.ssh import q
    listing = ssh.run(f"cd {q(base)} 2>/dev/null || exit 0; "
                      f"find . -mindepth 2 -maxdepth 2 -type f -printf '%s %P\\n' | head -c {LISTING_MAX}",
                      what=f"list the dumps in {base}", retry=False)
    files: dict[str, dict[str, int]] = {}
    for line in listing.decode("utf-8", "replace").splitlines():
        size, _, path = line.partition(" ")
        directory, _, name = path.partition("/")
        if size.isdigit() and STAMP.match(directory) and "/" not in name:
            files.setdefault(directory, {})[name] = int(size)
    names = sorted(files)[-DUMPS_MAX:]
    wanted = [f"{d}/{n}" for d in names for n in ("summary.json", "dmesg.txt") if n in files[d]]
    contents: dict[str, bytes] = {}
    asked = set(wanted)
    if wanted:
        # the names on tar's stdin: any number of them, whatever the command line limit
        data = ssh.run(f"cd {q(base)} && tar cf - --verbatim-files-from -T - | head -c {TAR_MAX}",
                       "\n".join(wanted).encode(), what=f"read the dumps' summaries in {base}", retry=False)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    if member.isfile() and member.name in asked:
                        f = tar.extractfile(member)
                        contents[member.name] = f.read() if f is not None else b""
        except tarfile.TarError:
            pass       # what did arrive is still listed; the rest shows as unfinished saves
    dumps = [describe(d, f"{ssh.name}:{base.rstrip('/')}/{d}", contents.get(f"{d}/summary.json"),
                      contents.get(f"{d}/dmesg.txt", b"")[-DMESG_TAIL:], files[d]) for d in names]
    return [d for d in dumps if d is not None]


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


@contextmanager
def local_directory(root, config) -> Iterator[tuple[str, str]]:
    """The local dump directory (a path on this machine, through ``root``) and where it is, for as long
    as the block runs: a UUID/LABEL filesystem not mounted here is mounted for that time (the capture
    boot mounts it only to save). A directory that cannot be had is a KexecfwError saying why."""
    from kexecfw.errors import KexecfwError
    directory, where = local_target(root, config)
    if directory is None and config.device and config.ssh is None:
        from kexecfw.kdump.target import mounted
        with mounted(root, config.device, 0) as mount:
            yield os.path.join(mount, config.path.lstrip("/")), f"on {config.device}, mounted for this look"
        return
    if directory is None:
        raise KexecfwError(f"cannot look at the dump directory: {where}")
    yield directory, where


def target_dumps(root, config) -> tuple[list[Dump], str]:
    """The dumps on the configured target, local or ssh, and where they were looked for."""
    if config.ssh is not None:
        from kexecfw.kdump.ssh import Ssh
        ssh = Ssh(root, config.ssh)
        return remote_dumps(ssh, config.path), f"{ssh.name}:{config.path}"
    with local_directory(root, config) as (directory, where):
        return list_dumps(directory), f"{config.path} ({where})"


def check_ssh_target(root, config) -> tuple[bool, str]:
    """Is the ssh target reachable with the key, its directory writable and above the floor? One try
    (status must answer quickly), the way the capture boot logs in."""
    from kexecfw.errors import KexecfwError
    from kexecfw.kdump.ssh import Ssh, q
    ssh = Ssh(root, config.ssh)
    shown = f"{ssh.name}:{config.path}"
    if not root.path(config.ssh.key).is_file():
        return False, f"{shown}: no key {config.ssh.key}: `kexecfw kdump propagate` makes and installs it"
    base = q(config.path)
    try:
        out = ssh.run(f"mkdir -p {base} && test -w {base} && df -Pk {base}", what="check the dump directory",
                      retry=False, timeout=60)
    except KexecfwError as e:
        return False, e.message
    free = remote_free(out)
    if free is None:
        return False, f"{shown}: writable, but df said nothing readable about its free space"
    floor = config.min_free_bytes
    return free > floor, (f"{shown}: writable over ssh, {free >> 20} MiB free"
                          + ("" if free > floor else f", not more than the {config.min_free} floor"))


def remote_free(df_output: bytes) -> int | None:
    """Bytes available from ``df -Pk DIR``'s output (its last line, 4th column in KiB)."""
    lines = df_output.decode("utf-8", "replace").strip().splitlines()
    fields = lines[-1].split() if len(lines) >= 2 else []
    return int(fields[3]) << 10 if len(fields) >= 4 and fields[3].isdigit() else None
