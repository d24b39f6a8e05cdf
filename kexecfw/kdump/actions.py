"""The few actions of ``kexecfw kdump`` that change the running system, in one place.

Files (units, the GRUB snippet, the configuration) are written through the root by the callers;
what only the live machine can do — run update-grub, mkinitramfs, systemctl, load a panic kernel,
write /proc/sys, crash — goes through :class:`SystemActions`. It runs them only when the root is
the live ``/`` and this is not a test session (``$KEXECFW_TEST_SESSION``, which also makes the
syscall layer refuse kexec calls). Otherwise each action is recorded, not run: appended as one JSON
line to ``<root>/var/lib/kexecfw/kdump/actions.log`` (and kept in ``recorded``), so that tests and
a look at a staged root see exactly what would have been done.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

from kexecfw.errors import KexecfwError
from kexecfw.guard import in_test_session
from kexecfw.kdump import STATE_DIR

ACTIONS_LOG = f"{STATE_DIR}/actions.log"
# How the capture boot ends (systemctl --no-block: the save unit finishes while systemd acts)
END_COMMANDS = {"reboot": ["systemctl", "--no-block", "reboot"],
                "poweroff": ["systemctl", "--no-block", "poweroff"],
                "shell": ["systemctl", "--no-block", "isolate", "emergency.target"]}


class SystemActions:
    """Run (live root) or record (any other root, or a test session) what changes the system."""

    def __init__(self, root) -> None:
        self.root = root
        self.live = root.is_live and not in_test_session()
        self.recorded: list[dict] = []

    def _record(self, action: str, **details) -> None:
        entry = {"time": round(time.time(), 3), "action": action, **details}
        self.recorded.append(entry)
        path = self.root.path(ACTIONS_LOG)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as e:
            raise KexecfwError(f"cannot record the action {action} in {path}: {e.strerror}") from None

    def command(self, argv: list[str], why: str) -> None:
        """Run ``argv`` (live) or record it; a failure is one line naming the command and ``why``."""
        if not self.live:
            self._record("command", argv=argv, why=why)
            return
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace")
        except FileNotFoundError:
            raise KexecfwError(f"cannot {why}: {argv[0]} is not installed") from None
        if done.returncode != 0:
            last = (done.stdout.strip().splitlines() or ["no output"])[-1]
            raise KexecfwError(f"cannot {why}: `{' '.join(argv)}` exited {done.returncode}: {last[:200]}")

    def write_proc(self, rel: str, value: str) -> None:
        """Write a /proc/sys (or /proc/sysrq-trigger) file of the running kernel."""
        if not self.live:
            self._record("write", path="/" + rel.lstrip("/"), value=value)
            return
        try:
            with open("/" + rel.lstrip("/"), "w") as f:
                f.write(value)
        except OSError as e:
            raise KexecfwError(f"cannot write {value!r} to /{rel.lstrip('/')}: {e.strerror}") from None

    def load_panic(self, plan, ctx) -> None:
        """Load a planned panic kernel (kexec -p) into the running kernel."""
        if not self.live:
            self._record("load-panic", kernel=str(ctx.options.kernel), initrd=str(ctx.options.initrd),
                         cmdline=plan.cmdline, syscall=plan.syscall)
            return
        from kexecfw.load import execute_plan
        execute_plan(plan, ctx)

    def unload_panic(self) -> None:
        if not self.live:
            self._record("unload-panic")
            return
        from kexecfw.load import resolve_arch
        from kexecfw.pluginmanager import Hooks
        from kexecfw.syscalls import current_layer, lockdown_mode
        arch = resolve_arch(Hooks(), self.root)
        file_load = lockdown_mode(self.root) is not None and arch.nr_kexec_file_load >= 0
        current_layer(arch).unload(panic=True, file_load=file_load)

    def end_capture_boot(self, action: str) -> None:
        """The final or failure action of the capture boot: reboot, poweroff or shell."""
        self.command(END_COMMANDS[action], f"{action} after the dump")

    def crash(self) -> None:
        """Crash the running kernel on purpose (sysrq-c), after syncing the disks."""
        if not self.live:
            self._record("crash", how="sysrq-c")
            return
        os.sync()
        self.write_proc("proc/sys/kernel/sysrq", "1")
        self.write_proc("proc/sysrq-trigger", "c")
