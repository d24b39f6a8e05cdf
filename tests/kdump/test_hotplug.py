"""CPU/memory hotplug reloads: the udev rule and its debounce timer installed by enable (none for what the
kernel's crash_hotplug handles), removed by disable, reported by status; the rule checked by the real udev
rules engine (udevadm test, which never runs RUN programs, in a private mount namespace) and the units by
systemd-analyze verify. Temporary roots from the real guests' sysroots; every system action is recorded."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from kexecfw.kdump import LOAD_UNIT, UNIT_DIR
from kexecfw.kdump.hotplug import RELOAD_SERVICE, RELOAD_TIMER, UDEV_RULE, reload_service, reload_timer, udev_rule
from kexecfw.kdump.units import command_line, kexecfw_command
from tests.conftest import fixture_kernel, oracle
from tests.kdump.conftest import kdump, release_of
from tests.kdump.test_service import _initrd_built

RULE = UDEV_RULE.lstrip("/")
TIMER = f"{UNIT_DIR}/{RELOAD_TIMER}".lstrip("/")


def _crash_hotplug(root, subsystem: str, value: str) -> None:
    path = root / f"sys/devices/system/{subsystem}/crash_hotplug"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def _hotplug_check(root) -> dict:
    doc = json.loads(kdump(root, "status", "--json").stdout)
    return next(c for c in doc["checks"] if c["check"] == "hotplug")


def test_enable_installs_the_rule_and_timer_disable_removes_them(root):
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release_of(root)}")
    before = _hotplug_check(root)
    assert not before["ok"] and not before["required"] and "cpu, memory: NOT reloaded on hotplug" in before["detail"]
    done = kdump(root, "enable", "--json")
    assert done.returncode == 0, done.stderr
    assert any(UDEV_RULE in d and RELOAD_TIMER in d for d in json.loads(done.stdout)["done"])
    rule = (root / RULE).read_text()
    for subsystem in ("cpu", "memory"):
        assert f'SUBSYSTEM=="{subsystem}", GOTO="kexecfw_kdump_reload"' in rule.splitlines()
        assert f'SUBSYSTEM=="{subsystem}", ATTRS{{crash_hotplug}}=="1", GOTO="kexecfw_kdump_end"' in rule.splitlines()
    assert f"start {RELOAD_TIMER}" in rule and f"is-active {LOAD_UNIT}" in rule
    timer = (root / TIMER).read_text().splitlines()
    assert "OnActiveSec=5s" in timer and "RemainAfterElapse=no" in timer and f"Unit={RELOAD_SERVICE}" in timer
    reload = (root / f"{UNIT_DIR}/{RELOAD_SERVICE}".lstrip("/")).read_text()
    assert f"ExecStart={command_line(kexecfw_command(), 'kdump', 'reload')}" in reload.splitlines()
    after = _hotplug_check(root)
    assert after["ok"] and after["detail"] == f"cpu, memory: reloaded by udev ({UDEV_RULE}, {RELOAD_TIMER})"
    off = kdump(root, "disable", "--json")
    assert off.returncode == 0, off.stderr
    assert {UDEV_RULE, f"{UNIT_DIR}/{RELOAD_TIMER}"} <= set(json.loads(off.stdout)["removed"])
    assert not (root / RULE).exists() and not (root / TIMER).exists()


def test_no_rule_for_what_the_kernel_handles(root):
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release_of(root)}")
    _crash_hotplug(root, "cpu", "1")
    _crash_hotplug(root, "memory", "0")
    assert kdump(root, "enable").returncode == 0
    rule = (root / RULE).read_text()
    assert 'SUBSYSTEM=="memory", GOTO="kexecfw_kdump_reload"' in rule and 'SUBSYSTEM=="cpu"' not in rule
    detail = _hotplug_check(root)["detail"]
    assert detail.startswith("cpu: the kernel updates the crash header itself "
                             "(/sys/devices/system/cpu/crash_hotplug = 1); memory: reloaded by udev")
    # the load turns memory's crash_hotplug to 1 (as kexec_file_load does on 6.5+): the next load drops the rule
    _initrd_built(root)
    _crash_hotplug(root, "memory", "1")
    assert kdump(root, "load").returncode == 0
    assert not (root / RULE).exists()
    check = _hotplug_check(root)
    assert check["ok"] and check["detail"].startswith("cpu, memory: the kernel updates the crash header itself")


def test_enable_says_when_the_kernel_handles_everything(root):
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release_of(root)}")
    _crash_hotplug(root, "cpu", "1")
    _crash_hotplug(root, "memory", "1")
    done = kdump(root, "enable", "--json")
    assert done.returncode == 0, done.stderr
    assert "no udev hotplug rule: the kernel updates the crash header on CPU and memory hotplug itself " \
           "(crash_hotplug = 1)" in json.loads(done.stdout)["notes"]
    assert not (root / RULE).exists() and (root / TIMER).exists()


def _udevadm_test(rules_dir, action: str, devpath: str) -> str:
    """`udevadm test` with only the rules in ``rules_dir`` (every rules directory and /run hidden by an
    empty tmpfs in a private mount namespace: the host's rules do not run, nothing of the host changes)."""
    udevadm = oracle("udevadm", "udev")
    oracle("unshare", "util-linux")
    script = ("set -e; for d in /etc/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d /run; do "
              "[ -d $d ] && mount -t tmpfs kexecfw-test $d; done; "
              f"cp {rules_dir}/*.rules /etc/udev/rules.d/; {udevadm} test --action={action} {devpath}")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if "unshare failed" in done.stderr or "permission denied" in done.stderr.lower() and done.returncode:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize("devpath", ["/devices/system/cpu/cpu0", "/devices/system/memory/memory0"])
def test_udev_runs_the_rule_on_add_and_remove_only(tmp_path, devpath):
    (tmp_path / "98-kexecfw-kdump.rules").write_text(udev_rule(("cpu", "memory")))
    expected = f"/bin/systemctl --no-block start {RELOAD_TIMER}"
    for action, runs in (("add", True), ("remove", True), ("change", False), ("online", False)):
        out = _udevadm_test(tmp_path, action, devpath)
        assert "98-kexecfw-kdump.rules" in out                      # read by udev, no parse error
        assert "Invalid" not in out and "invalid" not in out, out
        assert (expected in out) is runs, f"{action} {devpath}: {out[-1500:]}"


def _verify(directory, units: dict[str, str]) -> None:
    """`systemd-analyze verify` of ``units`` written in ``directory``: no warning is accepted."""
    analyze = oracle("systemd-analyze", "systemd")
    directory.mkdir(exist_ok=True)
    for name, text in units.items():
        (directory / name).write_text(text)
    done = subprocess.run([analyze, "verify", *(f"./{n}" for n in units)], cwd=directory, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_units_pass_systemd_analyze_verify(tmp_path):
    """Every unit enable writes, as systemd itself reads them (no warning is accepted)."""
    from kexecfw.kdump.config import KdumpConfig
    from kexecfw.kdump.units import load_unit, save_unit
    command = kexecfw_command()
    _verify(tmp_path / "local", {
        "kexecfw-kdump.service": load_unit(command),
        "kexecfw-kdump-save.service": save_unit(command, KdumpConfig(failure_action="shell")),
        RELOAD_TIMER: reload_timer(),
        RELOAD_SERVICE: reload_service(command_line(command, "kdump", "reload"))})


def test_the_save_unit_of_an_ssh_target_waits_for_the_network(tmp_path):
    """Only the save unit is started in the capture boot (systemd.unit=): for an ssh target it pulls in
    network-online.target (hence what configures the network) and starts after it; a local or UUID/LABEL
    target does not wait for the network (the save finds and mounts the device itself). The capture
    command line keeps the running one's network parameters and adds none that stops the network."""
    from kexecfw.kdump.config import parse_config
    from kexecfw.kdump.plan import capture_cmdline
    from kexecfw.kdump.units import save_unit
    command = kexecfw_command()
    ssh = parse_config('[target]\nssh = "kdump@192.0.2.1"\n', "kdump.toml")
    unit = save_unit(command, ssh).splitlines()
    wants = next(line for line in unit if line.startswith("Wants="))
    after = next(line for line in unit if line.startswith("After="))
    assert "network-online.target" in wants.split() and "network-online.target" in after.split()
    # udev's coldplug processes the NIC (nothing else starts it in a systemd.unit= boot)
    assert {"systemd-udevd.service", "systemd-udev-trigger.service"} <= set(wants.split())
    assert "systemd-udev-trigger.service" in after.split()
    _verify(tmp_path / "ssh", {"kexecfw-kdump-save.service": save_unit(command, ssh)})
    for local in ("", '[target]\ndevice = "LABEL=crash"\n'):
        assert "network-online" not in save_unit(command, parse_config(local, "kdump.toml"))
        assert "udev" not in save_unit(command, parse_config(local, "kdump.toml"))
    running = "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro ip=dhcp net.ifnames=0 crashkernel=256M systemd.unit=multi-user.target"
    words = capture_cmdline(running, ssh).split()
    assert {"ip=dhcp", "net.ifnames=0"} <= set(words)
    assert [w for w in words if w.startswith("systemd.unit=")] == ["systemd.unit=kexecfw-kdump-save.service"]
    assert not [w for w in words if w.startswith(("systemd.mask", "ip=off", "ip=none", "rd.neednet=0"))]


def test_load_brings_the_save_unit_in_step_with_the_configuration(root):
    """An ssh target set after `enable`: the next load (at boot, or `reload`) rewrites the save unit, which
    only the capture boot reads, so that it waits for the network."""
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release_of(root)}")
    assert kdump(root, "enable").returncode == 0
    unit = root / f"{UNIT_DIR}/kexecfw-kdump-save.service".lstrip("/")
    assert "network-online.target" not in unit.read_text()
    (root / "etc/kexecfw/kdump.toml").write_text('[target]\nssh = "kdump@192.0.2.1"\n[actions]\nfinal = "poweroff"\n')
    _initrd_built(root)
    done = kdump(root, "reload")
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    assert ("After=local-fs.target systemd-remount-fs.service systemd-journald.socket systemd-udev-trigger.service "
            "network-online.target") in text
    assert "Description=kexecfw kdump: save the crash dump, then poweroff" in text
