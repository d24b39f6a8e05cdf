"""Text of the files ``kexecfw kdump enable`` installs: systemd units, the kernel hook, the GRUB snippet.

The units load early, like kdump-tools.service (DefaultDependencies=no, After=local-fs.target,
Before=basic.target), and call kexecfw through the interpreter it runs under now (``sys.executable``),
so a virtual environment under /opt works without PATH.
"""
from __future__ import annotations

import os
import shlex
import sys

from kexecfw.kdump import SAVE_UNIT, initrd_path, manifest_path
from kexecfw.kdump.config import KdumpConfig

POSTRM_HOOK = "/etc/kernel/postrm.d/zz-kexecfw-kdump"
INSTALL_PLUGIN = "/etc/kernel/install.d/90-kexecfw-kdump.install"
# systemd's FailureAction= for the save unit when the save process itself dies without acting
SYSTEMD_FAILURE_ACTION = {"reboot": "reboot", "poweroff": "poweroff", "shell": "none"}


def kexecfw_command(executable: str | None = None) -> list[str]:
    """How to start kexecfw with ``executable`` (default: this interpreter): the ``kexecfw`` script
    installed beside it when there is one (no runpy), else ``python -m kexecfw``."""
    executable = executable or sys.executable
    script = os.path.join(os.path.dirname(executable), "kexecfw")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [executable, "-m", "kexecfw"]


def command_line(base: list[str], *args: str) -> str:
    """``base`` and ``args`` as one shell-quoted line (what ExecStart= and the hooks run)."""
    return " ".join(shlex.quote(w) for w in [*base, *args])



def load_unit(command: list[str]) -> str:
    return f"""\
# Written by `kexecfw kdump enable`; `kexecfw kdump disable` removes it.
[Unit]
Description=kexecfw kdump: load the crash (panic) kernel
Documentation=https://github.com/kexecfw/kexecfw/blob/main/docs/kdump.md
DefaultDependencies=no
Wants=local-fs.target
After=local-fs.target
Before=basic.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists=!/proc/vmcore
# kdump-tools' unit, not both
Conflicts=kdump-tools.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={command_line(command, "kdump", "load")}
ExecStop={command_line(command, "kdump", "unload")}

[Install]
WantedBy=basic.target
"""


def save_unit(command: list[str], config: KdumpConfig) -> str:
    """The capture boot's unit. An ssh target needs the network up: udev's coldplug (the NIC) and
    ``network-online.target``, which pulls in what configures it (networking.service,
    systemd-networkd's wait-online, NetworkManager's), even though only this unit is started. A
    UUID/LABEL target needs nothing more: the save finds the device (waiting target.wait seconds) and
    mounts it itself."""
    on_failure = "OnFailure=emergency.target\n" if config.failure_action == "shell" else ""
    # udev must run its coldplug too: with DefaultDependencies=no and systemd.unit= nothing else starts it,
    # the NIC is never processed (not renamed, never matched by the network configuration) and
    # network-online.target waits in vain (seen in the lab's ssh-target capture boot)
    wants = " systemd-udevd.service systemd-udev-trigger.service network-online.target" if config.ssh else ""
    after = " systemd-udev-trigger.service network-online.target" if config.ssh else ""
    return f"""\
# Written by `kexecfw kdump enable`; started only in the capture boot
# (systemd.unit={SAVE_UNIT} on the capture kernel's command line).
[Unit]
Description=kexecfw kdump: save the crash dump, then {config.final_action}
Documentation=https://github.com/kexecfw/kexecfw/blob/main/docs/kdump.md
DefaultDependencies=no
Wants=local-fs.target systemd-remount-fs.service systemd-journald.socket{wants}
After=local-fs.target systemd-remount-fs.service systemd-journald.socket{after}
ConditionPathExists=/proc/vmcore
# if the save process itself dies without acting (killed, out of memory): still end the capture boot
FailureAction={SYSTEMD_FAILURE_ACTION[config.failure_action]}
{on_failure}
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart={command_line(command, "kdump", "save")}
"""


def _kernel_added(command: list[str], release: str) -> str:
    """Shell lines for a kernel ``release`` just installed: build its capture initrd, and reload when it
    is the running one (after a reboot into it, the load unit loads it). A failure is reported, not
    fatal: the kernel's installation goes on, and the load unit at the next boot builds what is missing."""
    return f"""\
{command_line(command, "kdump", "rebuild")} --release "{release}" || \\
    echo "kexecfw kdump: could not build the capture initrd for {release}; the next boot's load builds it" >&2
if [ "$(uname -r)" = "{release}" ]; then
    {command_line(command, "kdump", "reload")} || echo "kexecfw kdump: reload failed: see kexecfw kdump status" >&2
fi
"""


def _kernel_removed(release: str) -> str:
    return f'rm -f "{initrd_path(release)}" "{manifest_path(release)}"\n'


def postinst_hook(command: list[str]) -> str:
    """/etc/kernel/postinst.d/ hook (Debian's kernel packages run it with the release and the image)."""
    return f"""\
#!/bin/sh
# Written by `kexecfw kdump enable` (removed by `kexecfw kdump disable`): a newly installed kernel gets
# its capture initrd, and is reloaded when it is the running one.
# Arguments (Debian kernel hooks): $1 = kernel release, $2 = the kernel image.
[ -n "$1" ] || exit 0
{_kernel_added(command, "$1")}exit 0
"""


def postrm_hook() -> str:
    """/etc/kernel/postrm.d/ hook: a removed kernel's capture initrd goes with it."""
    return f"""\
#!/bin/sh
# Written by `kexecfw kdump enable` (removed by `kexecfw kdump disable`): remove the capture initrd of a
# removed kernel. Arguments (Debian kernel hooks): $1 = kernel release.
[ -n "$1" ] || exit 0
{_kernel_removed("$1")}exit 0
"""


def install_plugin(command: list[str]) -> str:
    """/etc/kernel/install.d/ plugin for kernel-install(8) (systemd-boot and UKI setups): the same as the
    Debian hooks; building twice when both run is harmless (the second build finds the initrd current)."""
    return f"""\
#!/bin/sh
# Written by `kexecfw kdump enable` (removed by `kexecfw kdump disable`): kernel-install plugin.
# Arguments: add|remove KERNEL_VERSION ENTRY_DIR [KERNEL_IMAGE [INITRD...]]; exit 0 (77 would stop the
# plugins after this one).
COMMAND="$1"
KERNEL_VERSION="$2"
[ -n "$KERNEL_VERSION" ] || exit 0
case "$COMMAND" in
add)
{_indent(_kernel_added(command, "$KERNEL_VERSION"))}    ;;
remove)
    {_kernel_removed("$KERNEL_VERSION")}    ;;
esac
exit 0
"""


def _indent(text: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def grub_snippet(size: str) -> str:
    return f"""\
# Written by `kexecfw kdump enable` (removed by `kexecfw kdump disable`): reserve memory for the
# capture kernel. Takes effect after update-grub and a reboot.
GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel={size}"
"""
