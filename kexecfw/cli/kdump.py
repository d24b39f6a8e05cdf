"""``kexecfw kdump ACTION``: the kdump service (docs/kdump.md).

``--root DIR`` (before or after the action; default: the global --sysroot, itself ``/``) is the system
to act on: every path (/etc/kexecfw, /etc/systemd/system, /etc/default/grub.d, /var/crash, /boot,
/proc, /sys) is resolved under it. Commands that change the running system (update-grub, mkinitramfs,
systemctl, the panic load, sysrq) run only when it is ``/``; on any other root they are recorded in
DIR/var/lib/kexecfw/kdump/actions.log. Each action imports only what it needs (``save`` runs in the
capture kernel).
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

ACTIONS = {
    "status": "is this machine armed: every reason, the self-test, the last dumps (exit 0 armed, 3 not)",
    "enable": "install the units, the kernel hook, the capture initrd and crashkernel= (GRUB); load when reserved",
    "disable": "remove what enable installed and unload the panic kernel (config and dumps stay)",
    "load": "load the configured capture kernel as the panic kernel (rebuilds its initrd when needed)",
    "unload": "unload the panic kernel",
    "reload": "load again, replacing what is loaded (planned first: a bad configuration leaves it loaded)",
    "show": "the effective configuration and the exact panic load it plans (nothing is loaded)",
    "test": "crash self-test: record a marker and crash (sysrq-c) with --yes-crash-this-machine",
    "list": "the dumps on the target (local, or over ssh): time, kernel, panic line, size, complete or not",
    "propagate": "ssh target: make the key (ed25519) if missing and install it on the host",
    "rebuild": "build the capture initrd when what goes into it changed (--force: always)",
    "save": "the capture boot's save (run by kexecfw-kdump-save.service): hooks, save, final action",
}
JSON_ACTIONS = ("status", "enable", "disable", "load", "reload", "show", "list", "rebuild", "save", "test")


def configure(parser: argparse.ArgumentParser) -> None:
    import argparse
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="the system to act on (default: the global --sysroot, /)")
    sub = parser.add_subparsers(dest="kdump_command", metavar="ACTION", required=True)
    for name, help_text in ACTIONS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--root", default=argparse.SUPPRESS, metavar="DIR", help="the system to act on")
        if name in JSON_ACTIONS:
            p.add_argument("--json", action="store_true", help="print a JSON document on stdout")
        if name == "test":
            p.add_argument("--yes-crash-this-machine", action="store_true",
                           help="really crash this machine now (sysrq-c), after recording the marker")
        if name == "rebuild":
            p.add_argument("--force", action="store_true", help="rebuild even when the initrd is current")
            p.add_argument("--release", metavar="KVER", help="the kernel release to build for (default: running)")
        if name == "save":
            p.add_argument("--vmcore", metavar="FILE", help="the dump to save (default /proc/vmcore)")


def run(args: argparse.Namespace) -> int:
    from kexecfw.kdump.actions import SystemActions
    from kexecfw.sysroot import Sysroot
    root = Sysroot(args.root or args.sysroot)
    actions = SystemActions(root)
    return globals()[f"_{args.kdump_command}"](args, root, actions)


def _out(args, doc: dict, lines: list[str]) -> None:
    if getattr(args, "json", False):
        from kexecfw.cli.common import print_json
        print_json({"schema": 1, **doc})
    else:
        print("\n".join(lines))


def _recorded_note(actions) -> list[str]:
    if actions.live or not actions.recorded:
        return []
    return [f"(not the live root: {len(actions.recorded)} system action(s) recorded in "
            f"{actions.root.path('/var/lib/kexecfw/kdump/actions.log')}, not run)"]


def _status(args, root, actions) -> int:
    from kexecfw.kdump import NOT_ARMED
    from kexecfw.kdump.status import gather
    doc = gather(root)
    lines = [f"kdump: {'ARMED' if doc['armed'] else 'NOT ARMED'}"]
    for c in doc["checks"]:
        mark = "ok " if c["ok"] else ("NO " if c["required"] else "-- ")
        lines.append(f"  {mark} {c['check']:<14} {c['detail']}")
    st = doc["selftest"]
    lines.append(f"  self-test: {'never run' if st is None else st['started'] + ': ' + st['result']}")
    if "dumps_error" in doc:
        lines.append(f"  dumps: {doc['dumps_error']}")
    for d in doc["dumps"]:
        lines.append(f"  dump {d['name']}: {d['release'] or '?'}, {'complete' if d['complete'] else 'INCOMPLETE'}")
    _out(args, doc, lines)
    return 0 if doc["armed"] else NOT_ARMED


def _enable(args, root, actions) -> int:
    from kexecfw.kdump.service import enable
    doc = enable(root, actions)
    built = doc["initrd"]
    lines = [f"done: {d}" for d in doc["done"]] + \
        [f"initrd: built {built['initrd']}" if built["rebuilt"] else f"initrd: {built['why']}"] + doc["notes"]
    if "load" in doc:
        lines.append(f"loaded {doc['load']['kernel']} as the panic kernel")
    lines.append("REBOOT NEEDED to reserve the crash region" if doc["reboot_needed"] else "no reboot needed")
    _out(args, doc, lines + _recorded_note(actions))
    return 0


def _disable(args, root, actions) -> int:
    from kexecfw.kdump.service import disable
    doc = disable(root, actions)
    _out(args, doc, [f"removed {r}" for r in doc["removed"]] + (["panic kernel unloaded"] if doc["unloaded"] else [])
         + doc["notes"] + _recorded_note(actions))
    return 0


def _load(args, root, actions) -> int:
    from kexecfw.kdump.service import load
    return _loaded(args, load(root, actions), actions)


def _reload(args, root, actions) -> int:
    from kexecfw.kdump.service import reload
    return _loaded(args, reload(root, actions), actions)


def _loaded(args, doc: dict, actions) -> int:
    """What `load` and `reload` print: the load, and its warnings (a short crash region) on stderr."""
    import sys
    for warning in doc.get("warnings", []):
        print(f"kexecfw: warning: {warning}", file=sys.stderr)
    _out(args, doc, [f"loaded {doc['kernel']} (sha256 {doc['kernel_sha256'][:16]}) with {doc['initrd']} "
                     f"(sha256 {(doc['initrd_sha256'] or '?')[:16]}) via {doc['syscall']}",
                     f"cmdline: {doc['cmdline']}"] + _recorded_note(actions))
    return 0


def _show(args, root, actions) -> int:
    from kexecfw.cli.load import format_plan
    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.plan import capture_of, plan_capture
    from kexecfw.kdump.units import kexecfw_command
    config = load_config(root)
    capture = capture_of(root, config)
    save = [*kexecfw_command(), "kdump", "save"]
    plan, ctx = plan_capture(root, capture)
    from kexecfw.kdump.target import describe_target
    doc = {"config": config.to_json(), "capture": capture.to_json(), "save_command": save,
           "target": describe_target(config), "plan": plan.to_json()}
    lines = [f"configuration: {config.source or 'defaults (no ' + str(root.path('/etc/kexecfw/kdump.toml')) + ')'}"]
    for section, values in config.to_json().items():
        if isinstance(values, dict):
            lines.append(f"[{section}] " + ", ".join(f"{k} = {v!r}" for k, v in values.items()))
    lines += [f"capture kernel: {capture.kernel}", f"capture initrd: {capture.initrd}", f"target: {doc['target']}",
              f"in the capture boot: {' '.join(save)}: dmesg.txt, the dump (level {config.level}, {config.codec}), "
              f"summary.json, keep {config.keep or 'all'}, {config.min_free} kept free; then {config.final_action} "
              f"(on failure: {config.failure_action})", "", format_plan(plan, ctx)]
    _out(args, doc, lines)
    return 0


def _test(args, root, actions) -> int:
    import time

    from kexecfw.errors import KexecfwError, UsageError
    from kexecfw.kdump import SELFTEST_JSON
    from kexecfw.kdump.state import write_state
    from kexecfw.kdump.status import gather
    if not args.yes_crash_this_machine:
        raise UsageError("`kdump test` crashes this machine (sysrq-c) to prove a dump is saved: "
                         "add --yes-crash-this-machine to do it")
    doc = gather(root)
    if not doc["armed"]:
        failing = [c["check"] for c in doc["checks"] if c["required"] and not c["ok"]]
        raise KexecfwError(f"not armed ({', '.join(failing)}): see `kexecfw kdump status`; no crash")
    marker = {"schema": 1, "time": int(time.time()), "crashed": True, "capture": doc["capture"]}
    write_state(root, SELFTEST_JSON, marker)
    _out(args, marker, ["self-test marker recorded; crashing now (sysrq-c): after the reboot, "
                        "`kexecfw kdump status` says whether the dump arrived"] + _recorded_note(actions))
    import sys
    sys.stdout.flush()
    actions.crash()
    return 0


def _list(args, root, actions) -> int:
    import time

    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.dumps import target_dumps
    config = load_config(root)
    dumps, where = target_dumps(root, config)
    lines = [f"{'time (UTC)':<20} {'kernel':<24} {'size':>10}  {'state':<10}  panic"]
    for d in dumps:
        lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(d.time)):<20} {d.release or '?':<24} "
                     f"{d.size / (1 << 20):>6.1f} MiB  {'complete' if d.complete else 'INCOMPLETE':<10}  "
                     f"{d.panic or '-'}" + ("" if d.complete else f"  [{d.why_incomplete}]"))
    if not dumps:
        lines = [f"no dumps in {where}"]
    _out(args, {"target": where, "dumps": [d.to_json() for d in dumps]}, lines)
    return 0


def _propagate(args, root, actions) -> int:
    from kexecfw.errors import BadInputError
    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.ssh import propagate
    config = load_config(root)
    if config.ssh is None:
        raise BadInputError(f"{config.source or '/etc/kexecfw/kdump.toml'}: target.ssh is not set: "
                            "nothing to propagate a key to (set ssh = \"user@host\")")
    print(propagate(root, config.ssh))
    return 0


def _rebuild(args, root, actions) -> int:
    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.initrd import rebuild
    from kexecfw.kdump.plan import capture_of
    capture = capture_of(root, load_config(root))
    release = args.release or capture.release
    kernel = capture.kernel if release == capture.release else f"/boot/vmlinuz-{release}"
    doc = rebuild(root, actions, release, kernel, force=args.force)
    _out(args, doc, [("rebuilt " if doc["rebuilt"] else "not rebuilt: ") + f"{doc['initrd']} ({doc['why']})"]
         + _recorded_note(actions))
    return 0


def _save(args, root, actions) -> int:
    from kexecfw.kdump.save import save
    code, doc = save(root, actions, args.vmcore)
    if args.json:
        _out(args, doc, [])
    return code
