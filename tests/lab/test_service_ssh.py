"""The service scenario's ssh target, host side: the kdump.toml edit the guest runs and the lab's sshd."""
from __future__ import annotations

import subprocess
from pathlib import Path

from kexecfw.kdump.config import DEFAULT_TEXT, parse_config
from kexecfw.lab.service import GUEST_HOST, ssh_target_edit
from kexecfw.lab.sshd import running_sshd
from tests.conftest import oracle


def test_the_target_edit_turns_the_default_config_into_the_ssh_target(tmp_path: Path) -> None:
    toml = tmp_path / "kdump.toml"
    toml.write_text(DEFAULT_TEXT)
    subprocess.run(["sed", "-i", ssh_target_edit(Path("/srv/dumps"), f"root@{GUEST_HOST}", 40022), str(toml)],
                   check=True)
    config = parse_config(toml.read_text(), str(toml))
    assert (config.ssh.user, config.ssh.host, config.ssh.port) == ("root", GUEST_HOST, 40022)
    assert config.path == "/srv/dumps"


def test_the_lab_sshd_lets_the_admin_key_in_on_loopback_only(tmp_path: Path) -> None:
    sshd, ssh = oracle("sshd", "openssh-server"), oracle("ssh", "openssh-client")
    with running_sshd(tmp_path / "sshd", sshd, oracle("ssh-keygen", "openssh-client")) as server:
        assert "ListenAddress 127.0.0.1\n" in (server.dir / "sshd_config").read_text()
        done = subprocess.run([ssh, "-p", str(server.port), "-i", str(server.admin_key), "-o", "BatchMode=yes",
                               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", f"{server.user}@127.0.0.1", "echo $HOME"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(server.dir / "home")
    assert server.proc.poll() is not None
