"""CPU and memory hotplug: reload the panic kernel when the machine's CPUs or RAM change, unless the
kernel updates the crash ELF header itself.

The capture load describes the CPUs (crash notes) and the RAM (elfcorehdr's PT_LOADs) of the moment
it was made; a CPU or a memory block added or removed afterwards is missing from the dump, or a
removed one is read as if it were there. Kernels from 6.5 with CONFIG_CRASH_HOTPLUG update the header
themselves and say so in ``/sys/devices/system/{cpu,memory}/crash_hotplug`` (1). For the others
``enable`` installs a udev rule (as kdump-tools, kdumpctl and SUSE's kdump do), only for the
subsystems the kernel does not handle, and the rule also skips them when the kernel handles them at
the time of the event (``ATTRS{crash_hotplug}=="1"``: the value can turn to 1 with the load itself).

A burst of events (a DIMM of 128 MiB memory blocks: dozens of "add" events) must cost one reload,
not one each: the rule only *starts* ``kexecfw-kdump-reload.timer``; starting a timer that is
already waiting does nothing, and when it elapses (5 s after the first event) it runs
``kexecfw-kdump-reload.service`` (``kdump reload``) once and stops (``RemainAfterElapse=no``), so the
next event arms it again. The rule acts only when ``kexecfw-kdump.service`` is active: the coldplug
"add" events of every boot come before the load unit and must not reload.
"""
from __future__ import annotations

from kexecfw.kdump import LOAD_UNIT, UNIT_DIR

SUBSYSTEMS = ("cpu", "memory")
UDEV_RULE = "/etc/udev/rules.d/98-kexecfw-kdump.rules"
RELOAD_TIMER = "kexecfw-kdump-reload.timer"
RELOAD_SERVICE = "kexecfw-kdump-reload.service"
DEBOUNCE_SECONDS = 5
FILES = (UDEV_RULE, f"{UNIT_DIR}/{RELOAD_TIMER}", f"{UNIT_DIR}/{RELOAD_SERVICE}")


def crash_hotplug_path(subsystem: str) -> str:
    return f"/sys/devices/system/{subsystem}/crash_hotplug"


def kernel_handles(root) -> dict[str, bool]:
    """For each subsystem: does the running kernel update the crash header on its hotplug itself?
    (``crash_hotplug`` is 1; absent before 6.5 or without CONFIG_CRASH_HOTPLUG)."""
    return {s: (root.read_optional(crash_hotplug_path(s)) or "").strip() == "1" for s in SUBSYSTEMS}


def udev_rule(subsystems: tuple[str, ...]) -> str:
    """The rule reloading on CPU/memory add and remove for ``subsystems`` (the ones the kernel does not handle)."""
    lines = ["# Written by `kexecfw kdump enable` (removed by `kexecfw kdump disable`): reload the panic kernel",
             "# when CPUs or memory are added or removed, so that the dump describes the machine as it is.",
             "# Starts a timer: a burst of events is one reload, 5 s after the first.",
             'ACTION!="add|remove", GOTO="kexecfw_kdump_end"']
    lines += [f'SUBSYSTEM=="{s}", ATTRS{{crash_hotplug}}=="1", GOTO="kexecfw_kdump_end"' for s in subsystems]
    lines += [f'SUBSYSTEM=="{s}", GOTO="kexecfw_kdump_reload"' for s in subsystems]
    lines += ['GOTO="kexecfw_kdump_end"',
              'LABEL="kexecfw_kdump_reload"',
              f"RUN+=\"/bin/sh -c '/bin/systemctl --quiet is-active {LOAD_UNIT} && "
              f"/bin/systemctl --no-block start {RELOAD_TIMER} || :'\"",
              'LABEL="kexecfw_kdump_end"']
    return "\n".join(lines) + "\n"


def reload_timer() -> str:
    return f"""\
# Written by `kexecfw kdump enable`: started by {UDEV_RULE} on CPU/memory hotplug;
# one reload {DEBOUNCE_SECONDS} s after the first event of a burst (starting it again while it waits does nothing).
[Unit]
Description=kexecfw kdump: reload the panic kernel after CPU/memory hotplug
Documentation=https://github.com/kexecfw/kexecfw/blob/main/docs/kdump.md

[Timer]
OnActiveSec={DEBOUNCE_SECONDS}s
AccuracySec=1s
RemainAfterElapse=no
Unit={RELOAD_SERVICE}
"""


def reload_service(exec_reload: str) -> str:
    """The reload the timer runs; ``exec_reload`` is the command line of ``kexecfw kdump reload``."""
    return f"""\
# Written by `kexecfw kdump enable`: run by {RELOAD_TIMER}.
[Unit]
Description=kexecfw kdump: reload the panic kernel for the CPUs and memory present now
Documentation=https://github.com/kexecfw/kexecfw/blob/main/docs/kdump.md
After={LOAD_UNIT}
ConditionPathExists=!/proc/vmcore

[Service]
Type=oneshot
ExecStart={exec_reload}
"""


def sync(root, write, exec_reload: str) -> list[str]:
    """Install the timer, its service and the rule for the subsystems the kernel does not handle
    (no rule when it handles both); ``write(rel, text)`` writes a file. Returns what was written."""
    handled = kernel_handles(root)
    unhandled = tuple(s for s in SUBSYSTEMS if not handled[s])
    written = []
    for rel, text in ((f"{UNIT_DIR}/{RELOAD_TIMER}", reload_timer()),
                      (f"{UNIT_DIR}/{RELOAD_SERVICE}", reload_service(exec_reload)),
                      (UDEV_RULE, udev_rule(unhandled) if unhandled else None)):
        path = root.path(rel)
        if text is None:
            if path.exists():
                path.unlink()
            continue
        if not path.is_file() or path.read_text() != text:
            write(rel, text)
            written.append(rel)
    return written


def status_check(root) -> tuple[bool, str]:
    """(ok, detail) for ``kdump status``: who keeps the panic load in step with CPU and memory hotplug."""
    handled = kernel_handles(root)
    rule = root.path(UDEV_RULE)
    text = rule.read_text(errors="replace") if rule.is_file() else ""
    timer = root.path(f"{UNIT_DIR}/{RELOAD_TIMER}").is_file()
    kernel = [s for s in SUBSYSTEMS if handled[s]]
    udev = [s for s in SUBSYSTEMS if not handled[s] and timer and f'SUBSYSTEM=="{s}", GOTO="kexecfw_kdump_reload"' in text]
    missing = [s for s in SUBSYSTEMS if s not in kernel and s not in udev]
    parts = []
    if kernel:
        parts.append(f"{', '.join(kernel)}: the kernel updates the crash header itself "
                     f"({', '.join(crash_hotplug_path(s) for s in kernel)} = 1)")
    if udev:
        parts.append(f"{', '.join(udev)}: reloaded by udev ({UDEV_RULE}, {RELOAD_TIMER})")
    if missing:
        parts.append(f"{', '.join(missing)}: NOT reloaded on hotplug ({UDEV_RULE} or {RELOAD_TIMER} missing: "
                     "`kexecfw kdump enable`)")
    return not missing, "; ".join(parts)
