"""Text of the files ``kexecfw kdump enable`` installs: systemd units, the kernel hook, the GRUB snippet.

The units load early, like kdump-tools.service (DefaultDependencies=no, After=local-fs.target,
Before=basic.target), and call kexecfw through the interpreter it runs under now (``sys.executable``),
so a virtual environment under /opt works without PATH.
"""
from __future__ import annotations

import os
import shlex
import sys

from kexecfw.kdump import LOAD_UNIT, SAVE_UNIT
from kexecfw.kdump.config import KdumpConfig

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


def _cmd(base: list[str], *args: str) -> str:
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
ExecStart={_cmd(command, "kdump", "load")}
ExecStop={_cmd(command, "kdump", "unload")}

[Install]
WantedBy=basic.target
"""


def save_unit(command: list[str], config: KdumpConfig) -> str:
    on_failure = "OnFailure=emergency.target\n" if config.failure_action == "shell" else ""
    return f"""\
# Written by `kexecfw kdump enable`; started only in the capture boot
# (systemd.unit={SAVE_UNIT} on the capture kernel's command line).
[Unit]
Description=kexecfw kdump: save the crash dump, then {config.final_action}
Documentation=https://github.com/kexecfw/kexecfw/blob/main/docs/kdump.md
DefaultDependencies=no
Wants=local-fs.target systemd-remount-fs.service systemd-journald.socket
After=local-fs.target systemd-remount-fs.service systemd-journald.socket
ConditionPathExists=/proc/vmcore
# if the save process itself dies without acting (killed, out of memory): still end the capture boot
FailureAction={SYSTEMD_FAILURE_ACTION[config.failure_action]}
{on_failure}
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart={_cmd(command, "kdump", "save")}
"""


def postinst_hook(command: list[str]) -> str:
    """/etc/kernel/postinst.d/ hook: a new kernel gets its capture initrd, and is loaded when it is the
    running one (after a reboot into it, the load unit does that)."""
    return f"""\
#!/bin/sh
# Written by `kexecfw kdump enable`: rebuild the capture initrd for a newly installed kernel, then reload.
# Arguments (Debian kernel hooks): $1 = kernel release, $2 = the kernel image.
set -e
[ -n "$1" ] || exit 0
{_cmd(command, "kdump", "rebuild")} --release "$1"
if [ "$(uname -r)" = "$1" ]; then
    {_cmd(command, "kdump", "reload")}
fi
exit 0
"""


def grub_snippet(size: str) -> str:
    return f"""\
# Written by `kexecfw kdump enable` (removed by `kexecfw kdump disable`): reserve memory for the
# capture kernel. Takes effect after update-grub and a reboot.
GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel={size}"
"""
