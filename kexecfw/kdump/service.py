"""enable / disable / load / unload: install the service on a system and arm or disarm its kernel.

``enable`` writes the configuration (when there is none), the two units, the kernel postinst hook
and the wants link (what ``systemctl enable`` makes), builds the capture initrd, and makes sure the
crash region is reserved: when the running command line already reserves enough it only checks that;
otherwise it writes the GRUB snippet and runs update-grub, and says that a reboot is needed. Every
file goes through the root; live-only steps through :class:`kexecfw.kdump.actions.SystemActions`.
"""
from __future__ import annotations

import os
import time

from kexecfw.errors import KexecfwError, NoSpaceError
from kexecfw.kdump import (GRUB_SNIPPET, LOAD_UNIT, LOADED_JSON, POSTINST_HOOK, SAVE_UNIT, UNIT_DIR, WANTS_DIR)
from kexecfw.kdump.config import CONFIG_PATH, DEFAULT_TEXT, KdumpConfig, parse_size
from kexecfw.kdump.plan import Capture, capture_of, plan_capture, sha256_file
from kexecfw.kdump.state import boot_id, read_state, remove_state, write_state


def _write(root, rel: str, text: str, mode: int = 0o644) -> None:
    path = root.path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _cpus(cmdline: str) -> int:
    """CPUs the capture kernel brings up: its nr_cpus= (or maxcpus=), else 1 as kdump configures."""
    for word in reversed(cmdline.split()):
        key, _, value = word.partition("=")
        if key in ("nr_cpus", "maxcpus") and value.isdigit() and 1 <= int(value) <= 8192:
            return int(value)
    return 1


def reservation(root, config: KdumpConfig, capture: Capture) -> dict:
    """The crash region now (from proc/iomem), the size needed and whether the region is enough.

    ``needed`` is config.crashkernel when it is a size, else kexecfw.crashkernel's estimate for the
    capture kernel and initrd (None when they are not there to size)."""
    from kexecfw import crashkernel as ck
    from kexecfw.memory.iomem import read_iomem
    memmap = read_iomem(root)
    region = memmap.main_crash_region
    reserved = region.size if region is not None else 0
    out: dict = {"reserved": reserved, "ram": memmap.ram_size, "needed": None, "estimate": None}
    if config.crashkernel != "auto":
        out["needed"] = parse_size(config.crashkernel)
        out["how"] = f"capture.crashkernel = {config.crashkernel}"
    else:
        kernel, initrd = root.path(capture.kernel), root.path(capture.initrd)
        if not kernel.is_file():
            out["how"] = f"cannot estimate: {capture.kernel} is missing"
        else:
            est = ck.estimate(str(kernel), str(initrd) if initrd.is_file() else None,
                              cpus=_cpus(capture.cmdline), ram=memmap.ram_size)
            out["estimate"] = est
            out["needed"] = est["total"]
            out["how"] = ("kexecfw.crashkernel estimate" +
                          ("" if initrd.is_file() else f", a lower bound: {capture.initrd} is not built yet"))
    out["enough"] = out["needed"] is not None and reserved >= out["needed"]
    return out


def grub_used(root) -> bool:
    return root.path("/etc/default/grub").is_file() or root.path("/usr/sbin/update-grub").is_file()


def enable(root, actions, executable: str | None = None) -> dict:
    """Install and arm the service on ``root``; what was done and what is still needed (a reboot)."""
    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.initrd import rebuild
    from kexecfw.kdump import hotplug
    from kexecfw.kdump.units import (INSTALL_PLUGIN, POSTRM_HOOK, install_plugin, kexecfw_command, load_unit,
                                     postinst_hook, postrm_hook, save_unit)
    report: dict = {"done": [], "reboot_needed": False, "notes": []}
    if not root.path(CONFIG_PATH).is_file():
        _write(root, CONFIG_PATH, DEFAULT_TEXT)
        report["done"].append(f"wrote {CONFIG_PATH} (the defaults)")
    config = load_config(root)
    command = kexecfw_command(executable)
    _write(root, f"{UNIT_DIR}/{LOAD_UNIT}", load_unit(command))
    _write(root, f"{UNIT_DIR}/{SAVE_UNIT}", save_unit(command, config))
    _write(root, POSTINST_HOOK, postinst_hook(command), 0o755)
    _write(root, POSTRM_HOOK, postrm_hook(), 0o755)
    _write(root, INSTALL_PLUGIN, install_plugin(command), 0o755)
    link = root.path(f"{WANTS_DIR}/{LOAD_UNIT}")
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(f"{UNIT_DIR}/{LOAD_UNIT}", link)
    report["done"].append(f"wrote {UNIT_DIR}/{LOAD_UNIT}, {UNIT_DIR}/{SAVE_UNIT}, the kernel hooks ({POSTINST_HOOK}, "
                          f"{POSTRM_HOOK}, {INSTALL_PLUGIN}); enabled {LOAD_UNIT} ({WANTS_DIR})")
    hotplug_files = hotplug.sync(root, lambda rel, text: _write(root, rel, text), _reload_command(command))
    if hotplug_files:
        report["done"].append(f"wrote {', '.join(hotplug_files)} (reload on CPU/memory hotplug)")
    if hotplug.UDEV_RULE not in hotplug_files and not root.path(hotplug.UDEV_RULE).is_file():
        report["notes"].append("no udev hotplug rule: the kernel updates the crash header on CPU and memory "
                               "hotplug itself (crash_hotplug = 1)")
    actions.command(["systemctl", "daemon-reload"], "reload systemd's units")
    capture = capture_of(root, config)
    built = rebuild(root, actions, capture.release, capture.kernel)
    report["initrd"] = built
    res = reservation(root, config, capture)
    report["reservation"] = res
    if res["needed"] is None:
        raise KexecfwError(f"cannot size the crash region: {res['how']}; set capture.crashkernel in {CONFIG_PATH}")
    size = crashkernel_value(res["needed"])
    if res["enough"]:
        report["notes"].append(f"the running kernel already reserves {res['reserved'] >> 20} MiB "
                               f"(needed {size}): crashkernel= left as it is")
    else:
        report["notes"].append(f"the crash region is too small: {shortfall(res)}")
        report["reboot_needed"] = True
        if grub_used(root):
            from kexecfw.kdump.units import grub_snippet
            _write(root, GRUB_SNIPPET, grub_snippet(size))
            actions.command(["update-grub"], "update the GRUB configuration")
            report["done"].append(f"wrote {GRUB_SNIPPET} (crashkernel={size}) and ran update-grub")
            report["notes"].append(f"reboot needed: GRUB now asks for crashkernel={size}; after the reboot "
                                   f"{LOAD_UNIT} loads the capture kernel")
        else:
            report["notes"].append(f"no GRUB here: add crashkernel={size} to the kernel command line of your "
                                   "boot loader yourself, then reboot")
    if res["enough"] and root.path(capture.initrd).is_file():
        report["load"] = load(root, actions, config)
    elif res["enough"]:
        report["notes"].append(f"not loaded yet: {capture.initrd} is not built (see `kexecfw kdump rebuild`)")
    return report


def crashkernel_value(needed: int) -> str:
    """The crashkernel= size that reserves at least ``needed`` bytes (whole MiB)."""
    return f"{-(-needed // (1 << 20))}M"


def shortfall(res: dict) -> str:
    """A too-small reservation in one sentence: reserved, needed, how much is missing, what to set."""
    mib = lambda n: f"{-(-n // (1 << 20))} MiB"  # noqa: E731
    return (f"{mib(res['reserved'])} reserved, {mib(res['needed'])} needed ({res['how']}): "
            f"{mib(res['needed'] - res['reserved'])} short; set crashkernel={crashkernel_value(res['needed'])}")


def _reload_command(command: list[str]) -> str:
    from kexecfw.kdump.units import command_line
    return command_line(command, "kdump", "reload")


def disable(root, actions) -> dict:
    """Remove what enable installed (the configuration and the dumps stay) and unload the panic kernel."""
    from kexecfw.kdump import hotplug
    from kexecfw.kdump.units import INSTALL_PLUGIN, POSTRM_HOOK
    removed = []
    for rel in (f"{WANTS_DIR}/{LOAD_UNIT}", f"{UNIT_DIR}/{LOAD_UNIT}", f"{UNIT_DIR}/{SAVE_UNIT}", POSTINST_HOOK,
                POSTRM_HOOK, INSTALL_PLUGIN, *hotplug.FILES, GRUB_SNIPPET):
        path = root.path(rel)
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(rel)
    actions.command(["systemctl", "daemon-reload"], "reload systemd's units")
    reboot = GRUB_SNIPPET in removed
    if reboot:
        actions.command(["update-grub"], "update the GRUB configuration")
    unloaded = unload(root, actions)
    return {"removed": removed, "unloaded": unloaded, "reboot_needed": reboot,
            "notes": ["crashkernel= stays reserved until the next reboot"] if reboot else []}


def load(root, actions, config: KdumpConfig | None = None, *, replace: bool = False) -> dict:
    """Plan the configured panic load (rebuilding the capture initrd first when it is not current),
    load it, set kernel.panic_on_oops=1 and record what was loaded with its sha256. ``replace``
    (reload): unload what is loaded, but only once the new load is planned — a typo in kdump.toml
    or a missing initrd leaves the machine armed with what it had, not disarmed."""
    from kexecfw.kdump.config import load_config
    from kexecfw.kdump.initrd import rebuild
    config = config or load_config(root)
    capture = capture_of(root, config)
    if not config.initrd:
        rebuild(root, actions, capture.release, capture.kernel)
    res = reservation(root, config, capture)
    if res["reserved"] == 0:
        raise NoSpaceError("no crash kernel region is reserved: run `kexecfw kdump enable`, then reboot")
    plan, ctx = plan_capture(root, capture)
    if replace:
        unload(root, actions)
    actions.load_panic(plan, ctx)
    if root.path(f"{UNIT_DIR}/{LOAD_UNIT}").is_file():
        # the load may have turned crash_hotplug to 1 (the kernel then updates the header itself): the
        # rule follows, and so does `status`
        from kexecfw.kdump import hotplug
        from kexecfw.kdump.units import kexecfw_command, save_unit
        hotplug.sync(root, lambda rel, text: _write(root, rel, text), _reload_command(kexecfw_command()))
        # the save unit follows kdump.toml (an ssh target set after enable needs the network in the
        # capture boot; a changed final action names itself): only the capture boot reads it
        unit = save_unit(kexecfw_command(), config)
        if root.read_optional(f"{UNIT_DIR}/{SAVE_UNIT}") != unit:
            _write(root, f"{UNIT_DIR}/{SAVE_UNIT}", unit)
    doc = {"schema": 1, "time": int(time.time()), **capture.to_json(), "syscall": plan.syscall,
           "kernel_sha256": sha256_file(root.path(capture.kernel)),
           "initrd_sha256": sha256_file(root.path(capture.initrd)),
           "cmdline_sha256": _sha_text(capture.cmdline), "live": actions.live, "boot_id": boot_id(root)}
    if res["needed"] is not None and not res["enough"]:
        doc["warnings"] = [f"the crash region is too small: {shortfall(res)}"]
    write_state(root, LOADED_JSON, doc)
    _panic_on_oops(root, actions)       # after the record: a refused sysctl leaves the load known
    return doc


def reload(root, actions) -> dict:
    """``kdump reload`` (the kernel hooks and the hotplug timer run it): load again, replacing what is loaded."""
    return load(root, actions, replace=True)


def _panic_on_oops(root, actions) -> None:
    """kernel.panic_on_oops=1, as kdump-tools sets it: an oops then panics, and the panic dumps. On the live
    system the value is read back: a kernel that keeps 0 (a sysctl locked by policy) is an error, not a
    machine that silently never dumps an oops."""
    actions.write_proc("proc/sys/kernel/panic_on_oops", "1")
    if actions.live:
        now = (root.read_optional("proc/sys/kernel/panic_on_oops") or "").strip()
        if now != "1":
            raise KexecfwError(f"kernel.panic_on_oops is {now or 'unreadable'} after writing 1 to "
                               "/proc/sys/kernel/panic_on_oops: an oops would not dump")


def unload(root, actions) -> bool:
    """Unload the panic kernel when one is loaded; forget what load recorded."""
    loaded = root.kexec_state().get("kexec_crash_loaded") == 1 or read_state(root, LOADED_JSON) is not None
    if loaded:
        actions.unload_panic()
    remove_state(root, LOADED_JSON)
    return loaded


def _sha_text(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()
