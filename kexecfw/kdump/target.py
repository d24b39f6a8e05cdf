"""Where the capture boot puts a dump: a local directory (on the root filesystem, or on a filesystem
found by UUID/LABEL and mounted for the save) or a directory on an ssh host.

Both are a :class:`Sink`: ``begin`` makes the crash directory, ``put`` writes one small file whole
(dmesg.txt, summary.json), ``write_dump`` writes the dump, ``prune`` keeps the newest N. A file is
under its final name only once it is whole; a dump that is not whole stays ``.incomplete``.

The ssh sink streams the dump straight into ``cat`` on the host as ``vmcore.flat.incomplete``
(:meth:`kexecfw.vmcore.writer.DumpWriter.write_flat`: makedumpfile's flattened -F format, whose
records may rewrite earlier offsets, so the writer needs no seekable file and nothing is written
locally). Only when ssh ended well and the host says the file has exactly the bytes sent is it
renamed ``vmcore.flat``: a connection cut mid-dump leaves a short ``.incomplete`` file (the remote
``cat`` sees an end of file either way, so its own success proves nothing).
"""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager

from kexecfw.errors import KexecfwError, NoSpaceError

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the capture boot does not import typing
if TYPE_CHECKING:
    from typing import Iterator

TARGET_MOUNT = "/run/kexecfw-kdump/target"


def _floor_error(where: str, free: int, floor: int) -> NoSpaceError:
    from kexecfw.cli.common import human_size
    return NoSpaceError(f"{where} has {human_size(max(free + floor, 0))} free, not more than the "
                        f"{human_size(floor)} floor (dump.min_free): no dump written; free space or lower the floor")


def find_device(root, device: str, wait: int) -> str:
    """The block device of ``device`` ("UUID=…"/"LABEL=…"): its /dev/disk/by-* link, else what blkid
    finds; tried every second for ``wait`` seconds (udev may still be settling in the capture boot)."""
    from kexecfw.kdump.dumps import device_node
    kind, _, value = device.partition("=")
    deadline = time.monotonic() + wait
    while True:
        node = root.path(device_node(device))
        if node.exists():
            return os.path.realpath(node)
        try:
            done = subprocess.run(["blkid", "-U" if kind == "UUID" else "-L", value], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=30)
            found = done.stdout.strip().splitlines()
            if done.returncode == 0 and found and found[0].startswith("/dev/"):
                return found[0]
        except (OSError, subprocess.TimeoutExpired):
            pass          # no blkid: the by-* links are the only way
        if time.monotonic() >= deadline:
            raise KexecfwError(f"target {device}: no such filesystem after waiting {wait} s (not in "
                               f"{device_node(device)}, not found by blkid): is its disk attached?")
        time.sleep(1)


@contextmanager
def mounted(root, device: str, wait: int) -> Iterator[str]:
    """``device`` mounted at the private TARGET_MOUNT (under ``root``) for the save, then unmounted.
    Run for real also on a staged root: the mount is the save's own and undone at its end."""
    node = find_device(root, device, wait)
    mount = root.path(TARGET_MOUNT)
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-o", "nosuid,nodev,noexec", node, str(mount)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise KexecfwError(f"target {device}: cannot mount {node} at {mount}: {last}")
    try:
        yield str(mount)
    finally:
        os.sync()
        gone = subprocess.run(["umount", str(mount)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace")
        if gone.returncode != 0:
            print(f"kexecfw kdump: cannot unmount {mount}: {gone.stderr.strip()[:200]}", flush=True)


class Sink:
    """A crash directory being written; see the module's docstring."""

    where: str            # the target as shown to people (a path, or user@host:path)
    directory: str | None = None
    stats: dict

    def begin(self, stamp: str) -> str: ...
    def put(self, name: str, data: bytes) -> None: ...
    def write_dump(self, dump, level: int, codec: str, panic_cpu: int) -> dict: ...
    def prune(self, keep: int) -> list[str]: ...
    def abandon(self) -> None:
        """Remove the crash directory when nothing was written into it."""


class LocalSink(Sink):
    def __init__(self, base: str, min_free: int) -> None:
        self.where = base
        self.base = base
        self.min_free = min_free
        self.stats = {}

    def begin(self, stamp: str) -> str:
        from kexecfw.vmcore.writer import output_error
        try:
            os.makedirs(self.base, mode=0o700, exist_ok=True)
            target, n = os.path.join(self.base, stamp), 1
            while os.path.exists(target):
                target, n = os.path.join(self.base, f"{stamp}-{n}"), n + 1
            os.mkdir(target, 0o700)
        except OSError as e:
            raise output_error(e, f"cannot create a crash directory in {self.base}") from None
        self.directory = target
        return target

    def put(self, name: str, data: bytes) -> None:
        from kexecfw.vmcore.save import atomic_write
        atomic_write(os.path.join(self.directory, name), data)

    def room(self) -> int:
        """What the dump may use: the free space now minus the floor."""
        from kexecfw.vmcore.writer import output_error
        try:
            st = os.statvfs(self.directory)
        except OSError as e:
            raise output_error(e, f"cannot read the free space of {self.directory}") from None
        return st.f_bavail * st.f_frsize - self.min_free

    def write_dump(self, dump, level: int, codec: str, panic_cpu: int) -> dict:
        from kexecfw.vmcore.writer import DumpWriter
        budget = self.room()
        if budget <= 0:
            raise _floor_error(self.base, budget, self.min_free)
        writer = DumpWriter(dump, level, codec, False, 0, False, panic_cpu=panic_cpu, byte_limit=budget)
        self.stats = writer.stats
        return writer.write(os.path.join(self.directory, "vmcore.kdump"))

    def prune(self, keep: int) -> list[str]:
        from kexecfw.vmcore.save import prune
        return prune(self.base, keep)

    def abandon(self) -> None:
        if self.directory is not None:
            try:
                os.rmdir(self.directory)        # only when empty
            except OSError:
                pass


class SshSink(Sink):
    """A crash directory ``<path>/<UTC time>-<host>`` on the ssh target."""

    def __init__(self, root, config, host: str) -> None:
        from kexecfw.kdump.ssh import Ssh
        self.ssh = Ssh(root, config.ssh, config.wait)
        self.base = config.path.rstrip("/") or "/"
        self.where = f"{self.ssh.name}:{self.base}"
        self.host = host
        self.min_free = config.min_free_bytes
        self.stats = {}

    def begin(self, stamp: str) -> str:
        from kexecfw.kdump.ssh import q
        # the first contact, tried until target.wait has passed; a name taken (two saves in one second)
        # gets a counter, as local crash directories do
        out = self.ssh.run(f"umask 077 && mkdir -p {q(self.base)} && cd {q(self.base)} && n={q(f'{stamp}-{self.host}')}"
                           f" && i=0 && while ! mkdir \"$n\" 2>/dev/null; do i=$((i+1)); [ $i -lt 100 ] || exit 1; "
                           f"n={q(stamp)}-$i-{q(self.host)}; done && echo \"$n\"",
                           what=f"create a crash directory in {self.base}")
        name = out.decode("utf-8", "replace").strip()
        if not name.startswith(stamp) or "/" in name:
            raise KexecfwError(f"{self.ssh.name}: creating a crash directory in {self.base} answered {name[:80]!r}")
        self.directory = f"{self.base}/{name}"
        return f"{self.ssh.name}:{self.directory}"

    def put(self, name: str, data: bytes) -> None:
        from kexecfw.kdump.ssh import q
        part = q(f"{self.directory}/.{name}.part")
        self.ssh.run(f"umask 077 && cat > {part} && test \"$(wc -c < {part})\" -eq {len(data)} && "
                     f"mv -f {part} {q(f'{self.directory}/{name}')}", data, what=f"write {name}")

    def _remote_room(self) -> int | None:
        from kexecfw.kdump.dumps import remote_free
        from kexecfw.kdump.ssh import q
        return remote_free(self.ssh.run(f"df -Pk {q(self.directory)}", what="read the free space"))

    def write_dump(self, dump, level: int, codec: str, panic_cpu: int) -> dict:
        from kexecfw.kdump.ssh import CONNECTION_FAILED, q
        from kexecfw.vmcore.writer import DumpIncomplete, DumpWriter
        room = self._remote_room()
        budget = None if room is None else room - self.min_free       # None: df said nothing readable
        if budget is not None and budget <= 0:
            raise _floor_error(self.where, budget, self.min_free)
        final = f"{self.directory}/vmcore.flat"
        partial = final + ".incomplete"
        shown = f"{self.ssh.name}:{partial}"
        writer = DumpWriter(dump, level, codec, False, 0, False, panic_cpu=panic_cpu, byte_limit=budget)
        self.stats = writer.stats
        incomplete: DumpIncomplete | None = None
        proc = self.ssh.start(f"umask 077 && cat > {q(partial)}")
        try:
            writer.write_flat(proc.stdin.fileno(), shown)
        except DumpIncomplete as e:
            incomplete = e            # what was sent stays, named .incomplete
        finally:
            code, words = _end(proc)
        sent = writer.stats.get("flat_bytes", 0)
        self.stats.update({"path": shown, "flat_bytes_sent": sent})
        cut = writer.stats.get("stream_cut")
        if code != 0 or cut:
            why = "; ".join(w for w in (f"ssh exited {code}" + (f": {words}" if words else "") if code else None,
                                        cut) if w)
            if code not in (0, CONNECTION_FAILED):       # the remote cat itself failed
                raise DumpIncomplete(f"writing {partial} on {self.ssh.name} failed after {sent} bytes of the "
                                     f"flattened dump ({why}): what arrived is marked incomplete")
            raise DumpIncomplete(f"the connection to {self.ssh.name} was cut after {sent} bytes of the "
                                 f"flattened dump ({why}): {partial} is marked incomplete")
        if incomplete is not None:
            raise incomplete
        tmp = q(partial)
        self.ssh.run(f"test \"$(wc -c < {tmp})\" -eq {sent} && mv -f {tmp} {q(final)}",
                     what=f"check that {final} arrived whole ({sent} bytes) and name it complete")
        self.stats["path"] = f"{self.ssh.name}:{final}"
        return self.stats

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest ``keep`` finished dumps of this host (those with a summary.json)."""
        from kexecfw.kdump.dumps import STAMP
        from kexecfw.kdump.ssh import q
        if keep <= 0:
            return []
        out = self.ssh.run(f"cd {q(self.base)} && ls -1d -- */summary.json 2>/dev/null; true", what="list old dumps")
        ours = sorted(n for n in (line.split("/", 1)[0] for line in out.decode("utf-8", "replace").splitlines())
                      if STAMP.match(n) and n.endswith(f"-{self.host}"))
        old = ours[:-keep]
        if old:
            self.ssh.run("rm -rf -- " + " ".join(q(f"{self.base}/{n}") for n in old), what="remove old dumps")
        return old


def _end(proc: subprocess.Popen) -> tuple[int, str]:
    """Close ``proc``'s stdin (the end of the stream) and wait for it: its exit status and last words."""
    try:
        proc.stdin.close()
    except OSError:
        pass                  # the reader is gone: its exit status says why
    code = proc.wait()
    words = (proc.stderr.read().decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
    proc.stderr.close()
    return code, words


def host_name(root) -> str:
    """This machine's name as a directory name: /etc/hostname, else the kernel's."""
    import re
    text = (root.read_optional("/etc/hostname") or "").strip() or os.uname().nodename
    name = re.sub(r"[^A-Za-z0-9.-]", "-", text.split(".")[0])[:63].strip("-.")
    return name if name and name[0].isalnum() else "host"


def describe_target(config) -> str:
    """The configured target in one line, as ``show`` prints it."""
    if config.ssh is not None:
        port = f":{config.ssh.port}" if config.ssh.port != 22 else ""
        return (f"ssh {config.ssh.user}@{config.ssh.host}{port}:{config.path} with {config.ssh.key} (the dump "
                f"streamed flattened, nothing written locally: vmcore.flat)")
    if config.device:
        return f"{config.path} on {config.device}, mounted at {TARGET_MOUNT} for the save (waits {config.wait} s)"
    return f"{config.path} on the root filesystem"


@contextmanager
def open_target(root, config) -> Iterator[Sink]:
    """The configured target as a Sink; a device target is mounted for as long as it is open."""
    if config.ssh is not None:
        yield SshSink(root, config, host_name(root))
    elif config.device:
        with mounted(root, config.device, config.wait) as mount:
            yield LocalSink(os.path.join(mount, config.path.lstrip("/")), config.min_free_bytes)
    else:
        yield LocalSink(str(root.path(config.path)), config.min_free_bytes)
