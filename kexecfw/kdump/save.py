"""``kdump save``: what the save unit runs in the capture boot.

Pre hooks, then ``kexecfw vmcore save --dir <target> -d <level> -c <codec> --keep N --min-free X``
(the same save flow, :func:`kexecfw.vmcore.save.save_flow`, called in this process: one interpreter
start less in the capture kernel), then the post hooks (also after a failed save), then the final
action — or the failure action when the save failed or was incomplete. A filesystem target
(UUID=/LABEL=) is mounted first. Imports stay light: this runs in the capture kernel.
"""
from __future__ import annotations

import os
import subprocess
import sys

from kexecfw.errors import ExitCode, KexecfwError

HOOK_TIMEOUT = 300           # seconds a hook may take before it is killed (the machine must reboot)
TARGET_MOUNT = "/run/kexecfw-kdump/target"


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


def _target(root, actions, config) -> str:
    """The dump directory (through the root), mounting a filesystem target first."""
    from kexecfw.kdump.dumps import device_node
    if config.ssh is not None:
        raise KexecfwError(f"ssh target {config.ssh.user}@{config.ssh.host}: the ssh transfer is not implemented "
                           "yet; set a local target.path or target.device")
    if not config.device:
        return str(root.path(config.path))
    mount = root.path(TARGET_MOUNT)
    mount.mkdir(parents=True, exist_ok=True)
    actions.command(["mount", device_node(config.device), TARGET_MOUNT], f"mount {config.device}")
    return str(mount / config.path.lstrip("/"))


def save(root, actions, vmcore: str | None = None) -> tuple[int, dict]:
    """The capture boot's whole job; returns (exit code, report). Never raises a KexecfwError: every
    failure ends in the failure action."""
    from kexecfw.kdump.config import load_config
    report: dict = {"schema": 1, "saved": None, "error": None}
    code = ExitCode.OK
    config = None
    directory = None
    try:
        config = load_config(root)
        directory = _target(root, actions, config)
        report["target"] = directory
        report["pre_hooks"] = run_hooks(root, config.pre_hooks, directory)
        from kexecfw.vmcore.save import save_flow
        vmcore = vmcore or str(root.path("/proc/vmcore"))
        _say(f"saving {vmcore} to {directory} (level {config.level}, {config.codec})")
        summary = save_flow(vmcore, directory, dump_level=config.level, compress=config.codec, elf=False,
                            threads=0, progress=False, keep=config.keep, min_free=config.min_free_bytes)
        report["saved"] = summary.get("directory")
        report["removed"] = summary.get("removed", [])
        _say(f"saved {summary.get('directory')}")
    except KexecfwError as e:
        report["error"] = e.message
        code = e.exit_code
        _say(f"the save failed: {e.message}")
    except Exception as e:      # anything unforeseen still has to end in the failure action
        report["error"] = f"{type(e).__name__}: {e}"
        code = ExitCode.FAILURE
        _say(f"the save failed: {report['error']}")
    if config is not None and directory is not None:
        report["post_hooks"] = run_hooks(root, config.post_hooks, report["saved"] or directory)
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
