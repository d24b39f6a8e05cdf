"""Units, the GRUB snippet, the capture command line, rebuild decisions, enable/disable and status on
temporary roots made from the real guests' sysroots (never the host: every system action is recorded)."""
from __future__ import annotations

import json
import os
import shutil

from kexecfw.kdump import initrd_path
from kexecfw.kdump.actions import SystemActions
from kexecfw.kdump.config import KdumpConfig, parse_config
from kexecfw.kdump.initrd import initrd_state, rebuild, write_manifest
from kexecfw.kdump.plan import capture_cmdline
from kexecfw.kdump.units import grub_snippet, kexecfw_command, load_unit, postinst_hook, save_unit
from kexecfw.sysroot import Sysroot
from tests.conftest import fixture_kernel
from tests.kdump.conftest import kdump, recorded, release_of

RUNNING = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-cloud-amd64 root=UUID=1234 ro quiet crashkernel=384M hugepages=16 " \
          "hugepagesz=2M nr_cpus=4 console=ttyS0"


def test_capture_cmdline_turns_cma_off_whatever_the_running_kernel_asked():
    # a running kernel's cma= would be carried into a reservation that cannot hold it
    line = capture_cmdline("root=/dev/vda1 cma=256M hugetlb_cma=1G console=ttyS0", KdumpConfig())
    assert line.split().count("cma=0") == 1 and "cma=256M" not in line and "hugetlb_cma=1G" not in line
    assert line.split().count("hugetlb_cma=0") == 1


def test_capture_cmdline_strips_and_appends_like_kdump_tools():
    assert capture_cmdline(RUNNING, KdumpConfig()) == (
        "root=UUID=1234 ro quiet console=ttyS0 reset_devices nr_cpus=1 irqpoll usbcore.nousb cma=0 hugetlb_cma=0 "
        "systemd.unit=kexecfw-kdump-save.service")


def test_capture_cmdline_configured_remove_and_append():
    config = parse_config('[capture]\nremove = ["quiet", "console="]\nappend = "console=ttyS1 maxcpus=1"', "t")
    assert capture_cmdline(RUNNING + " systemd.unit=graphical.target", config) == (
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-cloud-amd64 root=UUID=1234 ro crashkernel=384M hugepages=16 "
        "hugepagesz=2M nr_cpus=4 console=ttyS1 maxcpus=1 systemd.unit=kexecfw-kdump-save.service")


def test_units_point_at_the_interpreter(tmp_path):
    python = tmp_path / "opt/kexecfw/bin/python3"
    python.parent.mkdir(parents=True)
    python.touch()
    assert kexecfw_command(str(python)) == [str(python), "-m", "kexecfw"]
    script = python.parent / "kexecfw"
    script.write_text("#!python\n")
    script.chmod(0o755)
    command = kexecfw_command(str(python))
    assert command == [str(script)]
    text = load_unit(command)
    for line in ("DefaultDependencies=no", "After=local-fs.target", "Before=basic.target shutdown.target",
                 f"ExecStart={script} kdump load", f"ExecStop={script} kdump unload", "WantedBy=basic.target",
                 "ConditionPathExists=!/proc/vmcore"):
        assert line in text.splitlines()
    save = save_unit(command, KdumpConfig(failure_action="shell"))
    for line in (f"ExecStart={script} kdump save", "ConditionPathExists=/proc/vmcore", "FailureAction=none",
                 "OnFailure=emergency.target", "Type=oneshot"):
        assert line in save.splitlines()
    assert "FailureAction=poweroff" in save_unit(command, KdumpConfig(failure_action="poweroff")).splitlines()
    hook = postinst_hook(command)
    assert hook.startswith("#!/bin/sh\n") and f'{script} kdump rebuild --release "$1"' in hook
    assert f"{script} kdump reload" in hook


def test_grub_snippet():
    assert grub_snippet("256M").splitlines()[-1] == \
        'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=256M"'


def _initrd_built(root):
    """What a live `kdump rebuild` leaves: the initrd and the manifest of its inputs."""
    release = release_of(root)
    path = root / initrd_path(release).lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"070701" + bytes(4090))
    write_manifest(Sysroot(root), release, f"/boot/vmlinuz-{release}")
    return path


def test_rebuild_decisions_by_content(root):
    sysroot = Sysroot(root)
    release = release_of(root)
    kernel = f"/boot/vmlinuz-{release}"
    (root / kernel.lstrip("/")).write_bytes(b"kernel one")
    assert initrd_state(sysroot, release, kernel) == (False, f"{initrd_path(release)} is missing: run "
                                                             "`kexecfw kdump rebuild`")
    initrd = _initrd_built(root)
    assert initrd_state(sysroot, release, kernel)[0] is True
    # the same content written again (a new mtime) is not a change
    stamp = os.stat(root / "lib/modules" / release / "modules.dep").st_mtime
    (root / "lib/modules" / release / "modules.dep").write_text("kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n")
    os.utime(root / "lib/modules" / release / "modules.dep", (stamp + 100, stamp + 100))
    assert initrd_state(sysroot, release, kernel)[0] is True
    # each input's content
    for rel, content in ((kernel, b"kernel two"), ("/etc/initramfs-tools/modules", b"virtio_blk\n"),
                         ("/etc/kexecfw/kdump.toml", b"[dump]\nlevel = 1\n"), ("/etc/fstab", b"UUID=9 / ext4 0 1\n")):
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        current, why = initrd_state(sysroot, release, kernel)
        assert not current and f"({rel} changed)" in why
        write_manifest(sysroot, release, kernel)
    # current: rebuild does nothing; forced, it runs mkinitramfs with the MODULES=dep copy (recorded)
    actions = SystemActions(sysroot)
    assert rebuild(sysroot, actions, release, kernel)["rebuilt"] is False and actions.recorded == []
    rebuild(sysroot, actions, release, kernel, force=True)
    assert actions.recorded[-1]["argv"] == ["mkinitramfs", "-d", "/var/lib/kexecfw/kdump/initramfs-tools", "-o",
                                            f"{initrd_path(release)}.new", release]
    conf = (root / "var/lib/kexecfw/kdump/initramfs-tools/initramfs.conf").read_text()
    assert conf.splitlines()[-1] == "MODULES=dep" and (root / "var/lib/kexecfw/kdump/initramfs-tools/modules").exists()
    assert initrd.exists()


def test_enable_status_disable_cli(root):
    release = release_of(root)
    # a reservation the running command line already has (384M) and a kernel to size: only checked
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release}")
    status = kdump(root, "status", "--json")
    assert status.returncode == 3, status.stderr
    checks = {c["check"]: c for c in json.loads(status.stdout)["checks"]}
    assert not checks["service"]["ok"] and "kexecfw kdump enable" in checks["service"]["detail"]
    assert checks["reservation"]["ok"] and checks["reservation"]["detail"].startswith("384 MiB reserved, ")
    assert not checks["initrd"]["ok"] and "is missing" in checks["initrd"]["detail"]
    assert not checks["loaded"]["ok"] and "kexec_crash_loaded is 0" in checks["loaded"]["detail"]
    assert checks["target"]["ok"]

    done = kdump(root, "enable", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["reboot_needed"] is False and "already reserves 384 MiB" in doc["notes"][0]
    assert not (root / "etc/default/grub.d/kexecfw-kdump.cfg").exists()
    assert (root / "etc/systemd/system/basic.target.wants/kexecfw-kdump.service").is_symlink()
    assert (root / "etc/kernel/postinst.d/zz-kexecfw-kdump").stat().st_mode & 0o111
    assert (root / "etc/kexecfw/kdump.toml").is_file()
    argvs = [a.get("argv") for a in recorded(root)]
    assert ["systemctl", "daemon-reload"] in argvs and argvs[-1][0] == "mkinitramfs"

    # built (as a live rebuild would) and loaded (recorded), with the crash kernel loaded in this root
    _initrd_built(root)
    loaded = kdump(root, "load", "--json")
    assert loaded.returncode == 0, loaded.stderr
    doc = json.loads(loaded.stdout)
    assert doc["cmdline"].endswith("reset_devices nr_cpus=1 irqpoll usbcore.nousb cma=0 hugetlb_cma=0 "
                                   "systemd.unit=kexecfw-kdump-save.service") and "crashkernel" not in doc["cmdline"]
    assert len(doc["kernel_sha256"]) == 64 and doc["live"] is False
    assert recorded(root)[-2]["action"] == "load-panic"
    assert recorded(root)[-1] == {**recorded(root)[-1], "action": "write", "path": "/proc/sys/kernel/panic_on_oops",
                                  "value": "1"}
    (root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    (root / "proc/sys/kernel/panic_on_oops").write_text("1\n")
    armed = kdump(root, "status")
    assert armed.returncode == 0, armed.stdout + armed.stderr
    assert armed.stdout.startswith("kdump: ARMED")
    crashed = kdump(root, "test", "--yes-crash-this-machine")
    assert crashed.returncode == 0, crashed.stderr
    assert recorded(root)[-1]["action"] == "crash" and (root / "var/lib/kexecfw/kdump/selftest.json").is_file()
    assert json.loads(kdump(root, "status", "--json").stdout)["selftest"]["result"] == \
        "no dump arrived after the test's crash"

    # a changed configuration: the loaded command line is stale, the initrd out of date
    (root / "etc/kexecfw/kdump.toml").write_text('[capture]\nappend = "nr_cpus=1"\n')
    stale = json.loads(kdump(root, "status", "--json").stdout)
    checks = {c["check"]: c for c in stale["checks"]}
    assert "configured command line differ" in checks["loaded"]["detail"] and not checks["loaded"]["ok"]
    assert "/etc/kexecfw/kdump.toml changed" in checks["initrd"]["detail"]

    off = kdump(root, "disable", "--json")
    assert off.returncode == 0, off.stderr
    assert "/etc/systemd/system/kexecfw-kdump.service" in json.loads(off.stdout)["removed"]
    assert recorded(root)[-1]["action"] == "unload-panic"
    assert not (root / "var/lib/kexecfw/kdump/loaded.json").exists()


def test_enable_writes_grub_when_the_reservation_is_short(root):
    release = release_of(root)
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release}")
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (root / "etc/kexecfw").mkdir(parents=True)
    (root / "etc/kexecfw/kdump.toml").write_text('[capture]\ncrashkernel = "512M"\n')
    status = kdump(root, "status")
    assert status.returncode == 3
    assert "384 MiB reserved, 512 MiB needed (capture.crashkernel = 512M): 128 MiB short" in status.stdout
    done = kdump(root, "enable")
    assert done.returncode == 0, done.stderr
    assert "REBOOT NEEDED" in done.stdout
    assert "crashkernel=512M\"" in (root / "etc/default/grub.d/kexecfw-kdump.cfg").read_text()
    assert ["update-grub"] in [a.get("argv") for a in recorded(root)]


def test_no_reservation_is_said(root):
    iomem = (root / "proc/iomem").read_text()
    (root / "proc/iomem").write_text("".join(ln for ln in iomem.splitlines(keepends=True) if "Crash kernel" not in ln))
    out = kdump(root, "status", "--json")
    checks = {c["check"]: c for c in json.loads(out.stdout)["checks"]}
    assert out.returncode == 3 and not checks["reservation"]["ok"]
    assert checks["reservation"]["detail"].startswith("no crash region reserved (crashkernel=)")
    load = kdump(root, "load")
    assert load.returncode == 4 and "no crash kernel region is reserved" in load.stderr


def test_bad_config_is_one_line_through_the_cli(root):
    (root / "etc/kexecfw").mkdir(parents=True)
    (root / "etc/kexecfw/kdump.toml").write_text("[actions]\nfinall = 'reboot'\n")
    out = kdump(root, "status")
    assert out.returncode == 3
    assert out.stderr == (f"kexecfw: error: {root}/etc/kexecfw/kdump.toml: unknown key actions.finall "
                          "(did you mean final?)\n")


def test_show_plans_the_exact_load(root):
    release = release_of(root)
    shutil.copy(fixture_kernel("x86_64"), root / f"boot/vmlinuz-{release}")
    _initrd_built(root)
    out = kdump(root, "show", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    # the planned command line is the capture one, plus what the x86_64 plugin adds (elfcorehdr=)
    assert doc["plan"]["mode"] == "panic" and doc["plan"]["cmdline"].startswith(doc["capture"]["cmdline"] + " ")
    assert doc["save_command"][-2:] == ["kdump", "save"] and doc["target"] == "/var/crash on the root filesystem"
    text = kdump(root, "show").stdout
    assert "in the capture boot: " in text and " kdump save: dmesg.txt, the dump (level 31, zlib), summary.json, " \
        "keep 3, 256M kept free; then reboot (on failure: reboot)" in text
    assert recorded(root) == []          # show changes nothing


def test_self_test_needs_the_flag_and_an_armed_machine(root):
    refused = kdump(root, "test")
    assert refused.returncode == 2 and "--yes-crash-this-machine" in refused.stderr
    not_armed = kdump(root, "test", "--yes-crash-this-machine")
    assert not_armed.returncode == 1 and "not armed (service" in not_armed.stderr
    assert recorded(root) == [] and not (root / "var/lib/kexecfw/kdump/selftest.json").exists()
