"""The service scenario's ssh target: the kdump.toml edit the guest runs, the lab's sshd, and (slow) a whole run
whose capture boot streams the dump through QEMU's user-mode network into an sshd on the host's loopback."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def ssh_service_run(tmp_path_factory: pytest.TempPathFactory):
    """One x86_64 service run with the ssh target (about 6-8 min under TCG): the README block, then the
    target set to the lab's sshd on the host's loopback, `kdump propagate`, the crash self-test."""
    from kexecfw.lab.service import run
    result = run("x86_64", "kexecfw", keep=tmp_path_factory.mktemp("service-ssh") / "run", timeout=900,
                 target="ssh")
    print(result.summary())
    return result


@pytest.mark.slow
def test_the_capture_boot_streams_the_dump_to_the_hosts_sshd(ssh_service_run) -> None:
    failed = [f"{p.name}: {p.detail}" for p in ssh_service_run.phases if p.required and not p.ok]
    assert ssh_service_run.ok, failed
    names = {p.name for p in ssh_service_run.phases if p.ok}
    # the dump arrived whole on the host, was reassembled by makedumpfile -R and read by kexecfw and drgn
    assert {"dump on the host's sshd directory as vmcore.flat", "summary.json on the host says complete",
            "host: makedumpfile -R (the dump is flattened)", "host: kexecfw vmcore dmesg has the panic",
            "boot 3: self-test passed"} <= names, sorted(names)
    flat = next((ssh_service_run.directory / "sshd").rglob("vmcore.flat"))
    assert flat.stat().st_mode & 0o777 == 0o600
    assert not list((ssh_service_run.directory / "sshd").rglob("*.incomplete"))
