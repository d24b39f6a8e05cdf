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
    from kexecfw.kdump.dumps import check_ssh_target, list_dumps, local_directory, target_dumps
    from kexecfw.kdump.initrd import initrd_state
    from kexecfw.kdump.plan import capture_of, sha256_file
    from kexecfw.kdump.service import reservation, shortfall
    from kexecfw.kdump.target import host_name
    config = load_config(root)
    capture = capture_of(root, config)
    checks = []
    dumps_error = None

    enabled = root.path(f"{WANTS_DIR}/{LOAD_UNIT}").is_symlink() and root.path(f"{UNIT_DIR}/{SAVE_UNIT}").is_file()
    checks.append(_check("service", enabled, f"{LOAD_UNIT} enabled and {SAVE_UNIT} installed" if enabled
                         else "not enabled: run `kexecfw kdump enable`"))

    try:
        res = reservation(root, config, capture)
    except KexecfwError as e:
        res = {"reserved": 0, "needed": None, "enough": False, "how": e.message}
    if res["reserved"] == 0:
        detail = "no crash region reserved (crashkernel=): run `kexecfw kdump enable` and reboot"
    elif res["needed"] is None:
        detail = f"{_mib(res['reserved'])} reserved; {res['how']}"
    elif res["enough"]:
        detail = f"{_mib(res['reserved'])} reserved, {_mib(res['needed'])} needed ({res['how']})"
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

    if config.ssh is not None:
        checks.append(_check("target", *check_ssh_target(root, config)))
        dumps = []
        if not checks[-1]["ok"]:
            dumps_error = "not listed: the target check failed"
        else:
            try:     # this machine's: several may share the directory
                host = host_name(root)
                dumps = [d for d in target_dumps(root, config)[0] if d.name.endswith(f"-{host}")]
            except KexecfwError as e:
                dumps_error = e.message
        if checks[-1]["ok"]:
            checks.append(room_check(root, config, dumps, res.get("ram") or 0))
    else:
        try:
            with local_directory(root, config) as (directory, where):
                checks.append(local_target_check(config, directory, where))
                dumps = list_dumps(directory)
        except KexecfwError as e:
            checks.append(_check("target", False, e.message))
            dumps = []

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
            "selftest": selftest, "dumps": [d.to_json() for d in dumps[-5:]],
            **({"dumps_error": dumps_error} if dumps_error else {})}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def local_target_check(config, directory: str, where: str) -> dict:
    """The local dump directory: writable, and more free than the floor."""
    from kexecfw.kdump.dumps import free_space
    free, writable = free_space(directory)
    floor = config.min_free_bytes
    shown = config.path if not config.device else f"{config.device}:{config.path}"
    detail = (f"{shown} ({where}) cannot be examined" if free is None else
              f"{shown} ({where}): {'writable' if writable else 'NOT writable'}, {_mib(free)} free"
              + ("" if free > floor else f", not more than the {config.min_free} floor"))
    return _check("target", free is not None and writable and free > floor, detail)


def room_check(root, config, dumps, ram: int) -> dict:
    """An ssh target's room for the next dump: the host's free space (``df`` over ssh, one more login)
    above the floor, against the size expected: that of the largest earlier complete dump of this machine
    (then the check is required); without one, the RAM, the most a dump can take (then it only informs:
    the self-test, which needs an armed machine, makes the first dump). Nothing is needed locally: the
    save streams the dump to the host."""
    from kexecfw.cli.common import human_size
    from kexecfw.kdump.dumps import remote_free
    from kexecfw.kdump.ssh import Ssh, q
    earlier = [d.size for d in dumps if d.complete]
    if earlier:
        expected, how, required = max(earlier), "the largest earlier dump of this machine", True
    elif ram:
        expected, how, required = ram, "no earlier dump of this machine: the RAM, the most a dump takes", False
    else:
        expected, how, required = 0, "no earlier dump of this machine and the RAM unknown: only the floor", False
    ssh = Ssh(root, config.ssh)
    head = f"{ssh.name}:{config.path}"
    try:
        free = remote_free(ssh.run(f"df -Pk {q(config.path)}", what="read the free space", retry=False, timeout=60))
    except KexecfwError as e:
        return _check("room", False, e.message, required)
    if free is None:
        return _check("room", False, f"{head}: df said nothing readable about its free space", required)
    floor = config.min_free_bytes
    room = free - floor
    detail = (f"{head}: {human_size(free)} free, {human_size(floor)} kept free (dump.min_free), "
              f"{human_size(expected)} expected ({how})")
    if room < expected:
        detail += f": {human_size(expected - room)} short; free space there or lower dump.min_free"
    return _check("room", room >= expected, detail, required)


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
