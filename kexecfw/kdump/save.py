"""``kdump save``: what the save unit runs in the capture boot.

Pre hooks, then the save into the target (kexecfw.kdump.target: a local directory, a filesystem
found by UUID/LABEL and mounted, or an ssh host): a crash directory named by the UTC time (and the
host name on an ssh target), ``dmesg.txt`` first, the dump (``.incomplete`` when not every page
was saved or arrived), ``summary.json`` last, then keep-N retention; then the post hooks (also
after a failed save), then the final action — or the failure action when the save failed or was
incomplete.

Imports stay light: this runs in the capture kernel, in a reservation of a few hundred MiB. The
summary has what the dump's VMCOREINFO and log say (release, crash time, panic CPU and line); the
per-CPU registers and their symbols, which need the architecture plugins (pluggy) and the kernel's
symbol table (kallsyms, ~11 MiB), are left to ``kexecfw vmcore info`` after the reboot.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kexecfw.errors import ExitCode, KexecfwError

HOOK_TIMEOUT = 300           # seconds a hook may take before it is killed (the machine must reboot)


def _say(text: str) -> None:
    print(f"kexecfw kdump: {text}", file=sys.stderr, flush=True)


def run_hooks(root, directory: str, argument: str) -> list[dict]:
    """Run the executables in ``directory`` (on the system) in name order with ``argument``."""
    base = root.path(directory)
    if not base.is_dir():
        return []
    results = []
    for name in sorted(os.listdir(base)):
        path = base / name
        if name.startswith(".") or not path.is_file() or not os.access(path, os.X_OK):
            continue
        try:
            code = subprocess.run([str(path), argument], stdin=subprocess.DEVNULL, timeout=HOOK_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        except OSError as e:
            code = e.strerror
        results.append({"hook": f"{directory}/{name}", "result": code})
        if code != 0:
            _say(f"hook {directory}/{name} failed ({code}); going on")
    return results


def crash_facts(dump) -> tuple[dict, bytes | None]:
    """Release, crash time, the panic line and CPU from ``dump``'s VMCOREINFO and log (best effort,
    never raises), and the log itself."""
    from kexecfw.vmcore.prstatus import panic_from_log, panic_report
    from kexecfw.vmcore.save import release_and_log
    facts, log = release_and_log(dump)
    if log:
        report = panic_report(log)
        panic = panic_from_log(log)
        facts["panic"] = report.line[:300] if report else None
        facts["panic_cpu"] = panic[0] if panic else None
    try:
        facts["cpus_in_dump"] = len(dump.prstatus_notes())
    except KexecfwError:
        pass
    return facts, log


def save_dump(sink, vmcore: str, config, config_error: str | None = None) -> dict:
    """The crash directory of ``vmcore`` in ``sink``: dmesg.txt, the dump, summary.json (also when the
    dump failed or is incomplete, saying why; the error is raised after it). ``config_error``: why the
    defaults were used instead of kdump.toml, kept in summary.json."""
    from kexecfw.vmcore import open_dump
    with open_dump(vmcore) as dump:
        facts, log = crash_facts(dump)
        directory = sink.begin(time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
        summary = {"schema": 1, **facts, "input": vmcore, "dump_level": config.level, "compression": config.codec,
                   "target": sink.where, "complete": False}
        if config_error is not None:
            summary["config_error"] = config_error
        t0 = time.monotonic()
        wrote = False
        try:
            if log is not None:
                sink.put("dmesg.txt", log)
                wrote = True
            stats = sink.write_dump(dump, config.level, config.codec, facts.get("panic_cpu") or 0)
            summary["complete"] = True
        except KexecfwError as e:
            summary.update({"dump": sink.stats, "failed": e.message, "seconds": round(time.monotonic() - t0, 3)})
            try:
                sink.put("summary.json", json.dumps(summary, indent=1).encode())
            except KexecfwError as e2:
                _say(f"summary.json could not be written either: {e2.message}")
                if not wrote:
                    sink.abandon()
            raise
        summary.update({"dump": stats, "seconds": round(time.monotonic() - t0, 3), "directory": directory})
        sink.put("summary.json", json.dumps(summary, indent=1).encode())
    summary["removed"] = sink.prune(config.keep)
    return summary


def save(root, actions, vmcore: str | None = None) -> tuple[int, dict]:
    """The capture boot's whole job; returns (exit code, report). Never raises a KexecfwError: every
    failure ends in the failure action. A kdump.toml that no longer reads (a typo made after the load)
    does not cost the dump: the defaults are used (dmesg and dump in /var/crash on the root filesystem,
    then reboot) and the configuration's error is said on the console and kept in summary.json."""
    from kexecfw.kdump.config import KdumpConfig, load_config
    from kexecfw.kdump.target import open_target
    report: dict = {"schema": 1, "saved": None, "error": None}
    code = ExitCode.OK
    config = None

    def failed(message: str, exit_code: int) -> int:
        report["error"] = message
        _say(f"the save failed: {message}")
        return exit_code

    try:
        try:
            config = load_config(root)
        except KexecfwError as e:
            config = KdumpConfig()
            report["config_error"] = e.message
            _say(f"{e.message}: saving with the defaults instead ({config.path} on the root filesystem, "
                 f"then {config.final_action})")
        with open_target(root, config) as sink:
            report["target"] = sink.where
            report["pre_hooks"] = run_hooks(root, config.pre_hooks, sink.where)
            vmcore = vmcore or str(root.path("/proc/vmcore"))
            _say(f"saving {vmcore} to {sink.where} (level {config.level}, {config.codec})")
            try:
                summary = save_dump(sink, vmcore, config, report.get("config_error"))
                report["saved"] = summary["directory"]
                report["removed"] = summary["removed"]
                _say(f"saved {summary['directory']}")
            except KexecfwError as e:
                code = failed(e.message, e.exit_code)
            except Exception as e:      # anything unforeseen still has to end in the failure action
                code = failed(f"{type(e).__name__}: {e}", ExitCode.FAILURE)
            report["post_hooks"] = run_hooks(root, config.post_hooks, report["saved"] or sink.directory
                                             or sink.where)
    except KexecfwError as e:
        code = failed(e.message, e.exit_code)
    except Exception as e:
        code = failed(f"{type(e).__name__}: {e}", ExitCode.FAILURE)
    action = (config.final_action if code == ExitCode.OK else config.failure_action) if config else "reboot"
    report["action"] = action
    _say(f"{'done' if code == ExitCode.OK else 'failed'}: {action}")
    try:
        actions.end_capture_boot(action)
    except KexecfwError as e:
        report["action_error"] = e.message
        _say(e.message)
        code = code or ExitCode.FAILURE
    return code, report
