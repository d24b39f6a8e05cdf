"""A throwaway sshd (Debian's openssh-server) for the ssh target: bound to 127.0.0.1 on a free unprivileged
port, with its own host key, an "admin" key already authorized (what the person running ``kexecfw kdump
propagate`` logs in with) and every file in one directory. Its ForceCommand gives logins a home of their own
(``<dir>/home``, where propagate installs the capture key) and, when ``<dir>/cut_after`` exists, cuts a dump
stream after that many bytes by killing the connection's sshd process (a connection lost mid-dump).

Used by tests/kdump/test_ssh_target.py (host only) and the lab's service scenario with ``--target ssh``
(the guest reaches it as 10.0.2.2 through QEMU's user-mode network)."""
from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kexecfw.lab.errors import LabError

WRAPPER = """#!/bin/sh
# ForceCommand: a home of its own, and (when {d}/cut_after exists) the dump stream cut after
# that many bytes by killing this connection's sshd process
export HOME={d}/home
case "$SSH_ORIGINAL_COMMAND" in
*vmcore.flat.incomplete*)
    if [ -f {d}/cut_after ]; then
        head -c "$(cat {d}/cut_after)" | sh -c "$SSH_ORIGINAL_COMMAND"
        p=$PPID
        while [ "$(cat /proc/$p/comm)" != sshd ]; do p=$(awk '{{print $4}}' /proc/$p/stat); done
        kill -9 "$p"
        exit 1
    fi ;;
esac
exec sh -c "$SSH_ORIGINAL_COMMAND"
"""
START_SECONDS = 20


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(ssh_keygen: str, path: Path) -> None:
    """An ed25519 key pair without passphrase at ``path`` and ``path``.pub."""
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


class Sshd:
    """A running sshd: its directory, port and process; where dumps go (``crash``) and the login's
    authorized_keys."""

    def __init__(self, d: Path, port: int, proc: subprocess.Popen, user: str) -> None:
        self.dir, self.port, self.proc, self.user = d, port, proc, user
        self.crash = d / "remote/crash"
        self.authorized = d / "home/.ssh/authorized_keys"
        self.admin_key = d / "admin_key"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@contextmanager
def running_sshd(d: Path, sshd: str = "/usr/sbin/sshd", ssh_keygen: str = "ssh-keygen") -> Iterator[Sshd]:
    """An sshd serving the current user on 127.0.0.1 with its files in ``d`` (made), stopped on exit."""
    if not Path(sshd).is_file():
        raise LabError(f"{sshd} is missing: apt-get install openssh-server")
    (d / "home/.ssh").mkdir(parents=True)
    keygen(ssh_keygen, d / "host_key")
    keygen(ssh_keygen, d / "admin_key")
    (d / "home/.ssh/authorized_keys").write_text((d / "admin_key.pub").read_text())
    (d / "wrap.sh").write_text(WRAPPER.format(d=d))
    (d / "wrap.sh").chmod(0o755)
    port = free_port()
    user = pwd.getpwuid(os.getuid()).pw_name
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/home/.ssh/authorized_keys\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nForceCommand {d}/wrap.sh\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)     # sshd's privilege separation directory
    with open(d / "sshd.log", "wb") as err:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                                stderr=err)
    server = Sshd(d, port, proc, user)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise LabError(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}") from None
                time.sleep(0.1)
        yield server
    finally:
        server.stop()
