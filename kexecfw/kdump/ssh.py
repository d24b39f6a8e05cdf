"""The ssh target: the system ``ssh`` client, run with the configured key, port and known hosts.

Every command runs non-interactively (``BatchMode=yes``) against a host key already known
(``StrictHostKeyChecking=yes``: ``propagate`` records it, once, with ``accept-new``). The client's
configuration and known hosts are those of the system being acted on (``<root>/root/.ssh/config``,
the ``known_hosts`` beside the key), so that a staged root never reads this machine's. Remote
commands are POSIX sh with every path quoted. ssh exits 255 when the connection failed, anything
else is the remote command's own status: only the first is worth trying again.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time

from kexecfw.errors import KexecfwError

CONNECT_TIMEOUT = 10          # seconds for one TCP connect + handshake
RETRY_EVERY = 5               # seconds between two connection attempts (capped by target.wait)
CONNECTION_FAILED = 255       # ssh's own exit status (anything else is the remote command's)
OUTPUT_MAX = 64 << 20         # what a listing may send back


class SshError(KexecfwError):
    """A remote command failed, or the host could not be reached."""


class Ssh:
    """``ssh`` to ``target`` (config.SshTarget) for the system at ``root``."""

    def __init__(self, root, target, wait: int = 0) -> None:
        self.root = root
        self.target = target
        self.wait = wait
        self.key = str(root.path(target.key))
        self.known_hosts = os.path.join(os.path.dirname(self.key), "known_hosts")
        config = root.path("/root/.ssh/config")
        self.config = str(config) if config.is_file() else "/dev/null"
        self.name = f"{target.user}@{target.host}" + (f":{target.port}" if target.port != 22 else "")
        self.attempts = 0

    def argv(self, remote: str, *, batch: bool = True, host_keys: str = "yes") -> list[str]:
        """The ssh command line running ``remote`` (a sh command) on the host."""
        opts = ["-F", self.config, "-p", str(self.target.port), "-o", f"BatchMode={'yes' if batch else 'no'}",
                "-o", f"StrictHostKeyChecking={host_keys}", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if batch:
            opts += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        return ["ssh", *opts, "--", f"{self.target.user}@{self.target.host}", remote]

    def run(self, remote: str, data: bytes = b"", *, what: str, retry: bool = True,
            timeout: float = 600) -> bytes:
        """Run ``remote`` with ``data`` on its stdin; its stdout. A connection failure is tried again
        every RETRY_EVERY seconds until ``wait`` has passed (``retry``); then, or on a remote
        failure, one line naming ``what`` and ssh's last words."""
        deadline = time.monotonic() + (self.wait if retry else 0)
        while True:
            self.attempts += 1
            try:
                done = subprocess.run(self.argv(remote), input=data, capture_output=True, timeout=timeout)
            except FileNotFoundError:
                raise SshError(f"cannot {what}: the ssh client is not installed (apt-get install "
                               "openssh-client)") from None
            except subprocess.TimeoutExpired:
                raise SshError(f"cannot {what} on {self.name}: no answer in {timeout:.0f} s") from None
            if done.returncode == 0:
                return done.stdout[:OUTPUT_MAX]
            last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1][:200]
            if done.returncode != CONNECTION_FAILED:
                raise SshError(f"cannot {what} on {self.name}: the remote command exited {done.returncode}: {last}")
            if time.monotonic() + RETRY_EVERY > deadline:
                tries = f"{self.attempts} attempt{'s' if self.attempts > 1 else ''}"
                raise SshError(f"cannot reach {self.name} to {what} ({tries} in {self.wait} s): {last}")
            time.sleep(RETRY_EVERY)

    def start(self, remote: str) -> subprocess.Popen:
        """``remote`` running with a pipe to its stdin (a stream of unknown length); one attempt."""
        self.attempts += 1
        try:
            return subprocess.Popen(self.argv(remote), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise SshError("the ssh client is not installed (apt-get install openssh-client)") from None


def q(path: str) -> str:
    """``path`` quoted for the remote sh."""
    return shlex.quote(path)


def propagate(root, target) -> str:
    """Make the key at ``target.key`` if missing (ssh-keygen, ed25519, no passphrase: the capture boot
    has nobody to type one) and add its public half to the host's ~/.ssh/authorized_keys, logging in
    the way the person running this can (their agent, keys or password); the host key is recorded
    on first contact. Returns the one line to print."""
    key = root.path(target.key)
    made = False
    if not key.is_file():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kexecfw-kdump",
                                   "-f", str(key)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except FileNotFoundError:
            raise SshError("cannot make the ssh key: ssh-keygen is not installed (apt-get install "
                           "openssh-client)") from None
        if done.returncode != 0:
            raise SshError(f"cannot make the ssh key {key}: ssh-keygen: {done.stderr.strip()[:200]}")
        made = True
    try:
        public = (key.parent / (key.name + ".pub")).read_text().strip()
    except OSError as e:
        raise SshError(f"cannot read the public key {key}.pub: {e.strerror} (remove {key} to make a new pair)") \
            from None
    if not public.startswith("ssh-") or "\n" in public:
        raise SshError(f"{key}.pub is not one OpenSSH public key line")
    ssh = Ssh(root, target)
    if not made:
        try:
            ssh.run("true", what="log in", retry=False, timeout=60)
            return f"kept {target.key}; already installed on {ssh.name}: the capture boot can log in"
        except SshError:
            pass         # not installed there yet (or the host is down: the install below says which)
    install = ("umask 077 && mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && "
               f"{{ grep -qxF {q(public)} ~/.ssh/authorized_keys || echo {q(public)} >> ~/.ssh/authorized_keys; }}")
    argv = ssh.argv(install, batch=False, host_keys="accept-new")
    try:
        done = subprocess.run(argv, stdin=None, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              errors="replace", timeout=300)
    except FileNotFoundError:
        raise SshError("cannot install the key: the ssh client is not installed (apt-get install "
                       "openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise SshError(f"cannot install the key on {ssh.name}: no answer in 300 s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise SshError(f"cannot install the key on {ssh.name}: {last}")
    # the key must now work alone, as the capture boot will use it
    Ssh(root, target).run("true", what="log in with the installed key", retry=False, timeout=60)
    return f"{'made' if made else 'kept'} {target.key}; installed on {ssh.name}: the capture boot can log in"
