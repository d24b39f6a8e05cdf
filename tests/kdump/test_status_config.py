"""A typo in /etc/kexecfw/kdump.toml, through the commands a person (or the load unit at boot, or a kernel
hook) runs: one line on stderr naming the file and the key, exit 3 (bad input), and nothing done — no unit
written, no system action recorded. (The parser's every message is in test_config.py.)"""
from __future__ import annotations

import pytest

from tests.kdump.conftest import kdump, recorded

TYPOS = {
    "section": ("[dumps]\nlevel = 31\n", "unknown section [dumps] (did you mean dump?)"),
    "key": ("[target]\npaht = \"/var/crash\"\n", "unknown key target.paht (did you mean path?)"),
    "type": ("[dump]\nkeep = \"3\"\n", "dump.keep must be an integer, not str '3'"),
    "value": ("[actions]\nfinal = \"shutdown\"\n", "actions.final: 'shutdown' is not one of reboot, poweroff"),
    "toml": ("[capture]\nappend = \"nr_cpus=1\n", "not valid TOML: "),
}


def _write_config(root, text: str) -> str:
    (root / "etc/kexecfw").mkdir(parents=True, exist_ok=True)
    (root / "etc/kexecfw/kdump.toml").write_text(text)
    return f"{root}/etc/kexecfw/kdump.toml"


@pytest.mark.parametrize("kind", TYPOS)
def test_status_names_the_file_and_the_key(root, kind):
    text, message = TYPOS[kind]
    path = _write_config(root, text)
    out = kdump(root, "status")
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.startswith(f"kexecfw: error: {path}: {message}") and out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("action", [("enable",), ("load",), ("reload",), ("show",), ("list",), ("rebuild",),
                                    ("test", "--yes-crash-this-machine")])
def test_every_action_stops_at_the_typo_and_does_nothing(root, action):
    path = _write_config(root, TYPOS["key"][0])
    out = kdump(root, *action)
    assert out.returncode == 3, out.stderr
    assert out.stderr == f"kexecfw: error: {path}: {TYPOS['key'][1]}\n"
    assert recorded(root) == []
    assert not (root / "etc/systemd").exists() and not (root / "etc/kernel").exists()
    assert not (root / "var/lib/kexecfw/kdump/selftest.json").exists()


def test_reload_with_a_typo_keeps_the_loaded_kernel(root):
    """`kdump reload` (run by the kernel hooks and the hotplug timer) plans before it unloads: a typo, or a
    capture kernel that is gone, leaves the machine armed with what it had."""
    (root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    (root / "var/lib/kexecfw/kdump").mkdir(parents=True)
    (root / "var/lib/kexecfw/kdump/loaded.json").write_text('{"schema": 1, "kernel": "/boot/vmlinuz-x"}\n')
    path = _write_config(root, TYPOS["key"][0])
    typo = kdump(root, "reload")
    assert typo.returncode == 3 and typo.stderr == f"kexecfw: error: {path}: {TYPOS['key'][1]}\n"
    _write_config(root, "")                       # a good configuration, but no capture kernel in /boot
    gone = kdump(root, "reload")
    assert gone.returncode != 0 and gone.stdout == "" and gone.stderr.count("\n") == 1, gone.stderr
    assert "unload-panic" not in [a["action"] for a in recorded(root)]
    assert (root / "var/lib/kexecfw/kdump/loaded.json").exists()
