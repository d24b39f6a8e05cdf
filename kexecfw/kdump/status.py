"""``kdump status``: is this machine armed — would a panic now end with a dump on the target — and why not.

Each check is a line with ok / not ok and its reason; the machine is armed when every required
check holds. The self-test and the last dumps are reported but do not disarm.
"""
from __future__ import annotations

import time

from kexecfw.errors import KexecfwError
from kexecfw.kdump import LOAD_UNIT, LOADED_JSON, SAVE_UNIT, SELFTEST_JSON, UNIT_DIR, WANTS_DIR
from kexecfw.kdump.state import boot_id, read_state


def _check(name: str, ok: bool, detail: str, required: bool = True) -> dict:
    return {"check": name, "ok": ok, "detail": detail, "required": required}


def gather(root) -> dict:
    """The status document of the system at ``root``."""
    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.dumps import free_space, list_dumps, local_target
    from kexecfw.kdump.initrd import initrd_state
    from kexecfw.kdump.plan import capture_of, sha256_file
    from kexecfw.kdump.service import reservation, shortfall
    config = load_config(root)
    capture = capture_of(root, config)
    checks = []

    enabled = root.path(f"{WANTS_DIR}/{LOAD_UNIT}").is_symlink() and root.path(f"{UNIT_DIR}/{SAVE_UNIT}").is_file()
    checks.append(_check("service", enabled, f"{LOAD_UNIT} enabled and {SAVE_UNIT} installed" if enabled
                         else "not enabled: run `kexecfw kdump enable`"))

    try:
        res = reservation(root, config, capture)
    except KexecfwError as e:
        res = {"reserved": 0, "needed": None, "enough": False, "how": e.message}
    mib = lambda n: f"{n / (1 << 20):.0f} MiB"  # noqa: E731
    if res["reserved"] == 0:
        detail = "no crash region reserved (crashkernel=): run `kexecfw kdump enable` and reboot"
    elif res["needed"] is None:
        detail = f"{mib(res['reserved'])} reserved; {res['how']}"
    elif res["enough"]:
        detail = f"{mib(res['reserved'])} reserved, {mib(res['needed'])} needed ({res['how']})"
    else:
        detail = f"{shortfall(res)} and reboot (`kexecfw kdump enable` writes it for GRUB)"
    checks.append(_check("reservation", res["reserved"] > 0 and (res["needed"] is None or res["enough"]), detail))

    kernel_there = root.path(capture.kernel).is_file()
    checks.append(_check("kernel", kernel_there, f"{capture.kernel}" + ("" if kernel_there else " is missing")))
    current, why = initrd_state(root, capture.release, capture.kernel, capture.initrd)
    checks.append(_check("initrd", current, why))

    crash_loaded = root.kexec_state().get("kexec_crash_loaded") == 1
    loaded = read_state(root, LOADED_JSON)
    if not crash_loaded:
        checks.append(_check("loaded", False, "no panic kernel loaded (/sys/kernel/kexec_crash_loaded is 0): "
                             "`kexecfw kdump load`"))
    elif loaded is None or loaded.get("boot_id") != boot_id(root):
        checks.append(_check("loaded", False, "a panic kernel is loaded, but not by `kexecfw kdump load` "
                             + ("" if loaded is None else "in this boot (its record is from an earlier one) ")
                             + "(kdump-tools?): `kexecfw kdump reload`"))
    else:
        stale = [what for what, path, key in (("kernel", capture.kernel, "kernel_sha256"),
                                               ("initrd", capture.initrd, "initrd_sha256"))
                 if loaded.get(what) != path or loaded.get(key) != sha256_file(root.path(path))]
        if loaded.get("cmdline") != capture.cmdline:
            stale.append("command line")
        checks.append(_check("loaded", not stale, f"loaded {loaded.get('kernel')} with {loaded.get('initrd')}"
                             + (f"; the configured {', '.join(stale)} differ: `kexecfw kdump reload`" if stale
                                else ", as configured")))

    directory, where = local_target(root, config)
    if directory is None:
        checks.append(_check("target", False, where))
        dumps = []
    else:
        free, writable = free_space(directory)
        floor = config.min_free_bytes
        ok = free is not None and writable and free > floor
        shown = config.path if not config.device else f"{config.device}:{config.path}"
        detail = (f"{shown} ({where}) cannot be examined" if free is None else
                  f"{shown} ({where}): {'writable' if writable else 'NOT writable'}, {mib(free)} free"
                  + ("" if free > floor else f", not more than the {config.min_free} floor"))
        checks.append(_check("target", ok, detail))
        dumps = list_dumps(directory)

    panic_on_oops = (root.read_optional("proc/sys/kernel/panic_on_oops") or "").strip()
    checks.append(_check("panic_on_oops", panic_on_oops == "1",
                         f"kernel.panic_on_oops = {panic_on_oops or 'unknown'}"
                         + ("" if panic_on_oops == "1" else " (an oops will not dump; load sets it)"), False))

    from kexecfw.kdump.hotplug import status_check
    checks.append(_check("hotplug", *status_check(root), False))

    selftest = selftest_result(read_state(root, SELFTEST_JSON), dumps)
    armed = all(c["ok"] for c in checks if c["required"])
    return {"schema": 1, "armed": armed, "checks": checks, "capture": capture.to_json(),
            "reservation": {k: v for k, v in res.items() if k != "estimate"}, "loaded": loaded,
            "selftest": selftest, "dumps": [d.to_json() for d in dumps[-5:]]}


def selftest_result(marker: dict | None, dumps) -> dict | None:
    """The last self-test: passed when a complete dump arrived after its marker."""
    if marker is None or not isinstance(marker.get("time"), (int, float)):
        return None
    after = [d for d in dumps if d.time >= int(marker["time"])]
    complete = [d for d in after if d.complete]
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(marker["time"]))
    if complete:
        return {"started": when, "result": "passed", "dump": complete[0].name}
    if after:
        return {"started": when, "result": "failed", "dump": after[0].name, "why": after[0].why_incomplete}
    return {"started": when, "result": "no dump arrived after the test's crash" if marker.get("crashed")
            else "not crashed yet"}
