"""The ssh target against a real sshd (Debian's openssh-server, started by kexecfw.lab.sshd) on 127.0.0.1, on a
free unprivileged port, with its own host key and authorized_keys in a temporary directory: `kdump
propagate` makes and installs the key, the capture boot's `kdump save` streams a real guest's dump
straight into ssh (no local copy: the capture root's /var is a tmpfs too small for one), the flattened
file is reassembled by makedumpfile -R and read by kexecfw; a connection cut mid-dump leaves nothing
that looks complete; a closed port is tried again until target.wait, then the failure action
(recorded, not run: the test session's marker); `kdump status` checks the target as the capture boot
logs in, lists this machine's dumps there and checks the host's room for the next one. No other address
is contacted."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from kexecfw.kdump.config import load_config
from kexecfw.kdump.dumps import check_ssh_target, panic_line
from kexecfw.lab.sshd import Sshd, running_sshd
from kexecfw.lab.sshd import free_port as _free_port
from kexecfw.sysroot import Sysroot
from tests.conftest import REPO, oracle, oracle_missing
from tests.kdump.conftest import kdump, recorded

@pytest.fixture
def sshd(tmp_path):
    binary = oracle("sshd", "openssh-server")
    oracle("ssh", "openssh-client")
    with running_sshd(tmp_path / "sshd", binary, oracle("ssh-keygen", "openssh-client")) as server:
        yield server


def _configure(root: Path, server: Sshd, port: int | None = None, wait: int = 30, extra: str = "") -> None:
    user = pwd.getpwuid(os.getuid()).pw_name
    (root / "etc/kexecfw").mkdir(parents=True, exist_ok=True)
    (root / "etc/kexecfw/kdump.toml").write_text(
        f'[target]\nssh = "{user}@127.0.0.1"\nssh_port = {port or server.port}\npath = "{server.crash}"\n'
        f'wait = {wait}\n[dump]\nmin_free = "1M"\n{extra}')
    # the client configuration of the system being acted on: how the admin logs in for `propagate`
    (root / "root/.ssh").mkdir(parents=True, exist_ok=True)
    (root / "root/.ssh/config").write_text(f"IdentityFile {server.dir}/admin_key\n")


def _propagate(root: Path, server: Sshd) -> None:
    done = kdump(root, "propagate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"made /root/.ssh/kexecfw_kdump_id; installed on {pwd.getpwuid(os.getuid()).pw_name}@127.0.0.1:"
        f"{server.port}: the capture boot can log in"]
    assert (root / "root/.ssh/kexecfw_kdump_id").stat().st_mode & 0o777 == 0o600
    # from now on only the installed key opens the door
    keys = server.authorized.read_text().splitlines()
    assert len(keys) == 2 and keys[1] == (root / "root/.ssh/kexecfw_kdump_id.pub").read_text().strip()
    server.authorized.write_text(keys[1] + "\n")


@contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted at ``where`` (which it hides) for the test's length."""
    where.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "kexecfw-test", str(where)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        oracle_missing("a tmpfs mount", f"root with mount rights: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _dump_dir(server: Sshd) -> Path:
    dirs = list(server.crash.iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _pages(path: Path) -> dict[int, bytes]:
    from kexecfw.vmcore import open_dump
    with open_dump(str(path)) as dump:
        return {pfn: dump.read_page(pfn) for lo, hi in dump.iter_present_pfns() for pfn in range(lo, hi)}


def test_propagate_save_reassemble_list(root, tmp_path, sshd, mini_vmcores, expected_dmesg):
    makedumpfile = oracle("makedumpfile", "makedumpfile")
    _configure(root, sshd)
    config = load_config(Sysroot(root))
    ok, detail = check_ssh_target(Sysroot(root), config)       # what `status` can say of an ssh target
    assert not ok and detail.endswith("no key /root/.ssh/kexecfw_kdump_id: `kexecfw kdump propagate` makes "
                                      "and installs it")
    _propagate(root, sshd)
    ok, detail = check_ssh_target(Sysroot(root), config)
    assert ok and f"127.0.0.1:{sshd.port}:{sshd.crash}: writable over ssh, " in detail and detail.endswith(" MiB free")
    again = kdump(root, "propagate")          # a second time: the key is kept, not added twice
    assert again.returncode == 0 and "kept /root/.ssh/kexecfw_kdump_id; already installed" in again.stdout
    assert len(sshd.authorized.read_text().splitlines()) == 1

    # the capture root's /var (the kdump state, the old spool's place) a tmpfs far smaller than the dump
    # (it holds the actions log): the dump goes straight to the host, nothing of its size is written here
    with _tmpfs(root / "var", "64k"):
        saved = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
        assert saved.returncode == 0, saved.stderr
        assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "reboot"]
        assert [p.name for p in (root / "var").rglob("*") if p.is_file()] == ["actions.log"]
    doc = json.loads(saved.stdout)
    assert doc["error"] is None and doc["action"] == "reboot"
    crash_dir = _dump_dir(sshd)
    host = os.uname().nodename.split(".")[0]
    assert crash_dir.name.endswith(f"-{host}") and doc["saved"].endswith(f"127.0.0.1:{sshd.port}:{crash_dir}")
    assert sorted(p.name for p in crash_dir.iterdir()) == ["dmesg.txt", "summary.json", "vmcore.flat"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in crash_dir.iterdir())
    assert (crash_dir / "dmesg.txt").read_bytes() == expected_dmesg["x86_64"]
    summary = json.loads((crash_dir / "summary.json").read_text())
    flat_size = (crash_dir / "vmcore.flat").stat().st_size
    assert summary["complete"] and summary["dump"]["flat_bytes_sent"] == flat_size > (64 << 10)
    assert summary["dump"]["path"] == f"{pwd.getpwuid(os.getuid()).pw_name}@127.0.0.1:{sshd.port}:{crash_dir}/vmcore.flat"

    # reassembled by makedumpfile -R, and read flattened by kexecfw: the same pages, those of the guest
    flat = crash_dir / "vmcore.flat"
    plain = tmp_path / "reassembled.kdump"
    with open(flat, "rb") as src:        # makedumpfile creates the file itself
        subprocess.run([makedumpfile, "-R", str(plain)], stdin=src, check=True, capture_output=True)
    ours, theirs, source = _pages(flat), _pages(plain), _pages(mini_vmcores["x86_64"])
    assert ours == theirs and ours and all(source[pfn] == page for pfn, page in ours.items())
    # (makedumpfile --dump-dmesg cannot read the mini dumps, its source ELF included: they lack the pages
    # it looks for; kexecfw reads the log of the reassembled file)
    log = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", str(plain)], capture_output=True,
                         check=True, cwd=REPO, timeout=300).stdout
    assert log == expected_dmesg["x86_64"]

    listed = kdump(root, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    dumps = json.loads(listed.stdout)["dumps"]
    assert [(d["name"], d["complete"]) for d in dumps] == [(crash_dir.name, True)]
    assert dumps[0]["panic"] == panic_line(expected_dmesg["x86_64"]) and dumps[0]["release"].startswith("6.1.0-56")
    assert "complete" in kdump(root, "list").stdout

    # keep = 1: the next save removes this one (a second in the same second gets a counter, never its directory)
    with open(root / "etc/kexecfw/kdump.toml", "a") as f:
        f.write("keep = 1\n")
    again = json.loads(kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json").stdout)
    assert again["error"] is None and again["removed"] == [crash_dir.name]
    assert [p.name for p in sshd.crash.iterdir()] == [again["saved"].rsplit("/", 1)[1]]


def test_connection_cut_mid_dump_leaves_it_incomplete(root, sshd, mini_vmcores, expected_dmesg):
    _configure(root, sshd, extra='[actions]\nfailure = "poweroff"\n')
    _propagate(root, sshd)
    (sshd.dir / "cut_after").write_text("20000")
    failed = kdump(root, "save", "--vmcore", str(mini_vmcores["arm64"]), "--json")
    assert failed.returncode == 6, failed.stderr
    doc = json.loads(failed.stdout)
    assert "connection" in doc["error"] and "cut after" in doc["error"] and doc["action"] == "poweroff"
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "poweroff"]
    crash_dir = _dump_dir(sshd)
    names = sorted(p.name for p in crash_dir.iterdir())
    assert names == ["dmesg.txt", "summary.json", "vmcore.flat.incomplete"], names
    assert (crash_dir / "vmcore.flat.incomplete").stat().st_size == 20000
    assert (crash_dir / "dmesg.txt").read_bytes() == expected_dmesg["arm64"]
    summary = json.loads((crash_dir / "summary.json").read_text())
    assert summary["complete"] is False and "cut after" in summary["failed"]
    dumps = json.loads(kdump(root, "list", "--json").stdout)["dumps"]
    assert len(dumps) == 1 and not dumps[0]["complete"] and "cut after" in dumps[0]["why_incomplete"]


def test_unreachable_host_is_retried_then_the_failure_action(root, sshd, mini_vmcores):
    closed = _free_port()          # nothing listens there
    _configure(root, sshd, port=closed, wait=6, extra='[actions]\nfailure = "shell"\n')
    (root / "root/.ssh/kexecfw_kdump_id").write_text("not used: the connection never opens\n")
    t0 = time.monotonic()
    failed = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
    took = time.monotonic() - t0
    assert failed.returncode == 1, failed.stderr
    doc = json.loads(failed.stdout)
    assert doc["error"].startswith(f"cannot reach {pwd.getpwuid(os.getuid()).pw_name}@127.0.0.1:{closed} to create ")
    assert "(2 attempts in 6 s)" in doc["error"] and "Connection refused" in doc["error"]
    assert 5 <= took < 60 and doc["action"] == "shell"
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "isolate", "emergency.target"]
    assert not sshd.crash.exists()
    assert len(failed.stderr.strip().splitlines()) == 3      # saving…, the one-line failure, the action


def test_propagate_names_the_problem(root, sshd):
    _configure(root, sshd, port=_free_port())
    done = kdump(root, "propagate")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "cannot install the key on" in done.stderr
    assert "Connection refused" in done.stderr
    (root / "etc/kexecfw/kdump.toml").write_text("[dump]\nlevel = 1\n")
    unset = kdump(root, "propagate")
    assert unset.returncode == 3 and "target.ssh is not set" in unset.stderr


def _status(root: Path) -> tuple[int, dict, dict]:
    done = kdump(root, "status", "--json")
    doc = json.loads(done.stdout)
    return done.returncode, doc, {c["check"]: c for c in doc["checks"]}


def test_status_of_an_ssh_target_and_its_room(root, sshd, mini_vmcores):
    """`status` logs in as the capture boot will (the key, the directory writable, its free space), lists this
    machine's dumps there (not those of another machine sharing the directory) for the self-test, and checks
    the host's room (df over ssh) above the floor: against the largest earlier dump of this machine
    (required), or the RAM when there is none (said, not required). Nothing local is checked: the save
    streams the dump to the host."""
    from kexecfw.cli.common import human_size
    from kexecfw.kdump import SELFTEST_JSON
    from kexecfw.kdump.state import write_state
    _configure(root, sshd)
    code, doc, checks = _status(root)
    assert code == 3 and not checks["target"]["ok"] and checks["target"]["detail"].endswith(
        "no key /root/.ssh/kexecfw_kdump_id: `kexecfw kdump propagate` makes and installs it")
    assert doc["dumps"] == [] and doc["dumps_error"] == "not listed: the target check failed"
    assert "room" not in checks and "spool" not in checks       # no second login to a host that failed
    assert "dumps: not listed: the target check failed" in kdump(root, "status").stdout

    _propagate(root, sshd)
    other = sshd.crash / "20250101-000000-othermachine"      # another machine's dump in the same directory
    other.mkdir(parents=True)
    (other / "summary.json").write_text('{"complete": true}')
    (other / "vmcore.flat").write_bytes(bytes(4096))
    write_state(Sysroot(root), SELFTEST_JSON, {"schema": 1, "time": 1_000_000_000, "crashed": True})
    code, doc, checks = _status(root)
    assert checks["target"]["ok"] and "writable over ssh, " in checks["target"]["detail"]
    assert doc["dumps"] == [] and "dumps_error" not in doc
    assert doc["selftest"]["result"] == "no dump arrived after the test's crash"
    room = checks["room"]
    head = f"{pwd.getpwuid(os.getuid()).pw_name}@127.0.0.1:{sshd.port}:{sshd.crash}: "
    assert not room["required"] and room["detail"].startswith(head) and " free, 1 MiB kept free " in room["detail"]
    assert "expected (no earlier dump of this machine: the RAM, the most a dump takes)" in room["detail"]

    saved = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
    assert saved.returncode == 0, saved.stderr
    name = json.loads(saved.stdout)["saved"].rsplit("/", 1)[1]
    size = sum(p.stat().st_size for p in (sshd.crash / name).iterdir())
    code, doc, checks = _status(root)
    assert [(d["name"], d["complete"], d["size"]) for d in doc["dumps"]] == [(name, True, size)]
    assert doc["selftest"]["result"] == "passed" and doc["selftest"]["dump"] == name
    room = checks["room"]
    assert room["ok"] and room["required"], room
    assert room["detail"].endswith(f"1 MiB kept free (dump.min_free), {human_size(size)} expected "
                                   "(the largest earlier dump of this machine)")

    # a host filesystem with room above the floor (the target check holds) but not for such a dump: not
    # armed, said before any crash (the dumps moved into a tmpfs mounted over the directory, half a dump of
    # room left above the floor)
    keep = sshd.dir / "kept"
    shutil.move(str(sshd.crash), keep)
    with _tmpfs(sshd.crash, f"{((1 << 20) + size + size // 2) >> 10}k"):
        shutil.copytree(keep, sshd.crash, dirs_exist_ok=True)
        free = shutil.disk_usage(sshd.crash).free
        code, doc, checks = _status(root)
    assert checks["target"]["ok"], checks["target"]
    room = checks["room"]
    assert code == 3 and not doc["armed"] and not room["ok"] and room["required"]
    assert room["detail"] == (f"{head}{human_size(free)} free, 1 MiB kept free (dump.min_free), {human_size(size)} "
                              f"expected (the largest earlier dump of this machine): "
                              f"{human_size(size - free + (1 << 20))} short; free space there or lower dump.min_free")
