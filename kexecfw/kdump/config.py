"""/etc/kexecfw/kdump.toml: the kdump service's one configuration file, read with tomllib.

Every key is optional; a missing file is the defaults. Key by key (section, key, type, default)::

    [target]                 where dumps go
    path      str   "/var/crash"   directory of the dumps; on the root filesystem, or inside
                                   ``device`` when that is set (then relative to its top)
    device    str   ""             "" (the root filesystem), "UUID=<uuid>" or "LABEL=<label>": a
                                   filesystem the capture boot mounts to save into
    ssh       str   ""             "user@host": stream the dump to that host over ssh instead
                                   (``path`` is then the directory there); ``kexecfw kdump
                                   propagate`` makes the key and installs it on the host
    ssh_key   str   "/root/.ssh/kexecfw_kdump_id"   private key for ``ssh`` (ed25519)
    ssh_port  int   22             1..65535
    wait      int   60             seconds the capture boot waits for the target: the device to
                                   appear, the ssh host to answer (0..3600); then the failure action

    [dump]
    level     int   31             makedumpfile -d bits, 0..31 (1 zero, 2 cache, 4 cache private,
                                   8 user, 16 free pages excluded)
    codec     str   "zlib"         zlib, zstd, lzo or none (zlib: every reader reads it)
    keep      int   3              keep the newest N dumps kexecfw made (0: keep all)
    min_free  str   "256M"         never leave less free on the target's filesystem (K/M/G/T; on
                                   an ssh target, the host's: nothing is written locally)

    [capture]                the capture (panic) kernel
    kernel    str   ""             "": /boot/vmlinuz-<running release>
    initrd    str   ""             "": /var/lib/kexecfw/kdump/initrd.img-<release>, built by
                                   ``kexecfw kdump rebuild`` (initramfs-tools, MODULES=dep)
    append    str   "reset_devices nr_cpus=1 irqpoll usbcore.nousb"
                                   added to the running command line (a key=value here replaces the
                                   running one's); ``systemd.unit=kexecfw-kdump-save.service`` is
                                   always added
    remove    list  ["crashkernel", "hugepages", "hugepagesz", "BOOT_IMAGE"]
                                   parameters dropped from the running command line ("name" or
                                   "name=": every name=... and a bare name)
    crashkernel str "auto"         what ``enable`` reserves: "auto" (kexecfw.crashkernel's estimate
                                   for this kernel and initrd) or a size such as "384M"

    [actions]
    final     str   "reboot"       after a save: reboot or poweroff
    failure   str   "reboot"       when the save fails: reboot, poweroff or shell (emergency shell)

    [hooks]                  executables run in name order in the capture boot
    pre       str   "/etc/kexecfw/kdump-pre.d"    before the save; argument: the target
    post      str   "/etc/kexecfw/kdump-post.d"   after it (also after a failed save); argument:
                                                  the crash directory

A mistake is one line naming the file and the key: an unknown key (with "did you mean"), a
wrong type, a value out of range.
"""
from __future__ import annotations

import difflib
import os
import re

from kexecfw.errors import BadInputError
from kexecfw.records import Record
from kexecfw.sizes import parse_size

CONFIG_PATH = "/etc/kexecfw/kdump.toml"
# cma=0 hugetlb_cma=0 (as Fedora's kdump-utils): Debian's arm64 kernel keeps 64 MiB of CMA even in the
# capture kernel, which in a 128 MiB reservation leaves 21 MiB and an out-of-memory death unpacking the initrd
DEFAULT_APPEND = "reset_devices nr_cpus=1 irqpoll usbcore.nousb cma=0 hugetlb_cma=0"
DEFAULT_REMOVE = ("crashkernel", "hugepages", "hugepagesz", "cma", "hugetlb_cma", "BOOT_IMAGE")
CODECS = ("zlib", "zstd", "lzo", "none")
FINAL_ACTIONS = ("reboot", "poweroff")
FAILURE_ACTIONS = ("reboot", "poweroff", "shell")
DUMP_LEVEL_MAX = 31
CONFIG_SIZE_MAX = 1 << 20        # a configuration file, not data: refuse anything larger before parsing

_SSH = re.compile(r"^(?P<user>[a-z_][a-z0-9_.-]*)@(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$")
_DEVICE = re.compile(r"^(UUID|LABEL)=(\S+)$")


class SshTarget(Record, frozen=True):
    user: str
    host: str
    port: int
    key: str


class KdumpConfig(Record, frozen=True):
    """The effective configuration (defaults filled in); ``source`` is the file read, or None."""

    path: str = "/var/crash"
    device: str = ""
    ssh: SshTarget | None = None
    wait: int = 60
    level: int = 31
    codec: str = "zlib"
    keep: int = 3
    min_free: str = "256M"
    kernel: str = ""
    initrd: str = ""
    append: str = DEFAULT_APPEND
    remove: tuple[str, ...] = DEFAULT_REMOVE
    crashkernel: str = "auto"
    final_action: str = "reboot"
    failure_action: str = "reboot"
    pre_hooks: str = "/etc/kexecfw/kdump-pre.d"
    post_hooks: str = "/etc/kexecfw/kdump-post.d"
    source: str | None = None

    def _values(self) -> tuple:
        # equal configurations say the same, wherever they were read from: source is not compared
        return tuple(getattr(self, name) for name in self._fields if name != "source")

    @property
    def min_free_bytes(self) -> int:
        return parse_size(self.min_free)

    def to_json(self) -> dict:
        ssh = self.ssh
        return {"target": {"path": self.path, "device": self.device, "wait": self.wait,
                           "ssh": None if ssh is None else f"{ssh.user}@{ssh.host}",
                           "ssh_port": None if ssh is None else ssh.port, "ssh_key": None if ssh is None else ssh.key},
                "dump": {"level": self.level, "codec": self.codec, "keep": self.keep, "min_free": self.min_free},
                "capture": {"kernel": self.kernel, "initrd": self.initrd, "append": self.append,
                            "remove": list(self.remove), "crashkernel": self.crashkernel},
                "actions": {"final": self.final_action, "failure": self.failure_action},
                "hooks": {"pre": self.pre_hooks, "post": self.post_hooks}, "source": self.source}


# (section, key) -> (type, check); check returns an error text or None
def _choice(options: tuple[str, ...]):
    return lambda v: None if v in options else f"{v!r} is not one of {', '.join(options)}"


def _size_ok(v: str):
    try:
        parse_size(v)
    except BadInputError as e:
        return e.message
    return None


def _abs_path_or_empty(v: str):
    return None if v == "" or v.startswith("/") else f"{v!r} is not an absolute path"


def _abs_path(v: str):
    return None if v.startswith("/") else f"{v!r} is not an absolute path"


def _device_ok(v: str):
    return None if v == "" or _DEVICE.match(v) else f"{v!r} is not \"UUID=<uuid>\" or \"LABEL=<label>\""


def _ssh_ok(v: str):
    return None if v == "" or _SSH.match(v) else f"{v!r} is not user@host"


def _range(lo: int, hi: int):
    return lambda v: None if lo <= v <= hi else f"{v} is not in {lo}..{hi}"


def _params_ok(v):
    for word in v:
        if not word or any(c.isspace() for c in word):
            return f"{word!r} is not a kernel parameter name"
    return None


def _cmdline_ok(v: str):
    return None if "\n" not in v and "\0" not in v else "a command line is one line"


def _crashkernel_ok(v: str):
    return None if v == "auto" else _size_ok(v)


SCHEMA: dict[str, dict[str, tuple[type, object]]] = {
    "target": {"path": (str, _abs_path), "device": (str, _device_ok), "ssh": (str, _ssh_ok),
               "ssh_key": (str, _abs_path), "ssh_port": (int, _range(1, 65535)), "wait": (int, _range(0, 3600))},
    "dump": {"level": (int, _range(0, DUMP_LEVEL_MAX)), "codec": (str, _choice(CODECS)),
             "keep": (int, _range(0, 10000)), "min_free": (str, _size_ok)},
    "capture": {"kernel": (str, _abs_path_or_empty), "initrd": (str, _abs_path_or_empty),
                "append": (str, _cmdline_ok), "remove": (list, _params_ok), "crashkernel": (str, _crashkernel_ok)},
    "actions": {"final": (str, _choice(FINAL_ACTIONS)), "failure": (str, _choice(FAILURE_ACTIONS))},
    "hooks": {"pre": (str, _abs_path), "post": (str, _abs_path)},
}
# where each (section, key) lands in KdumpConfig
FIELD = {("target", "path"): "path", ("target", "device"): "device", ("target", "wait"): "wait",
         ("dump", "level"): "level",
         ("dump", "codec"): "codec", ("dump", "keep"): "keep", ("dump", "min_free"): "min_free",
         ("capture", "kernel"): "kernel", ("capture", "initrd"): "initrd", ("capture", "append"): "append",
         ("capture", "remove"): "remove", ("capture", "crashkernel"): "crashkernel",
         ("actions", "final"): "final_action", ("actions", "failure"): "failure_action",
         ("hooks", "pre"): "pre_hooks", ("hooks", "post"): "post_hooks"}
TYPE_NAMES = {str: "a string", int: "an integer", list: "a list of strings"}


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(options)})"


def parse_config(text: str, source: str) -> KdumpConfig:
    """The configuration in ``text`` (read from ``source``, named in every error)."""
    import tomllib
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadInputError(f"{source}: not valid TOML: {e}") from None
    values: dict[str, object] = {}
    ssh: dict[str, object] = {}
    for section, table in doc.items():
        if section not in SCHEMA:
            raise BadInputError(f"{source}: unknown section [{section}]{_did_you_mean(section, SCHEMA)}")
        if not isinstance(table, dict):
            raise BadInputError(f"{source}: {section} must be a section ([{section}]), not a value")
        for key, value in table.items():
            keys = SCHEMA[section]
            if key not in keys:
                raise BadInputError(f"{source}: unknown key {section}.{key}{_did_you_mean(key, keys)}")
            kind, check = keys[key]
            if type(value) is not kind or (kind is list and not all(isinstance(v, str) for v in value)):
                raise BadInputError(f"{source}: {section}.{key} must be {TYPE_NAMES[kind]}, "
                                    f"not {type(value).__name__} {value!r}"[:300])
            problem = check(value)
            if problem:
                raise BadInputError(f"{source}: {section}.{key}: {problem}"[:300])
            if section == "target" and key.startswith("ssh"):
                ssh[key] = value
            else:
                values[FIELD[(section, key)]] = tuple(v.rstrip("=") for v in value) if kind is list else value
    if ssh.get("ssh"):
        if values.get("device"):
            raise BadInputError(f"{source}: target.ssh and target.device are both set: choose one target")
        m = _SSH.match(str(ssh["ssh"]))
        values["ssh"] = SshTarget(m["user"], m["host"].strip("[]"), int(ssh.get("ssh_port", 22)),
                                  str(ssh.get("ssh_key", "/root/.ssh/kexecfw_kdump_id")))
    elif set(ssh) - {"ssh"}:
        extra = sorted(set(ssh) - {"ssh"})[0]
        raise BadInputError(f"{source}: target.{extra} is set but target.ssh is not: set ssh = \"user@host\" "
                            "or remove it")
    return KdumpConfig(**values, source=source)


def load_config(root) -> KdumpConfig:
    """The configuration of the system at ``root`` (a Sysroot): its CONFIG_PATH, or the defaults."""
    path = root.path(CONFIG_PATH)
    try:
        with open(path, "rb") as f:
            data = f.read(CONFIG_SIZE_MAX + 1)
    except FileNotFoundError:
        return KdumpConfig()
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > CONFIG_SIZE_MAX:
        raise BadInputError(f"{path}: larger than {CONFIG_SIZE_MAX >> 10} KiB: not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text (TOML files are UTF-8)") from None
    return parse_config(text, os.fspath(path))


DEFAULT_TEXT = f"""\
# kexecfw kdump configuration: every key is optional; `kexecfw kdump show` prints the effective values.
# Documented key by key in docs/kdump.md.

[target]
path = "/var/crash"
# device = "UUID=..."        # or "LABEL=...": save into that filesystem instead of the root one
# ssh = "user@host"           # or stream the dump to that host (path is then the directory there);
# ssh_key = "/root/.ssh/kexecfw_kdump_id"   # `kexecfw kdump propagate` makes and installs the key
# ssh_port = 22
# wait = 60                   # seconds to wait for the device or the ssh host, then the failure action

[dump]
level = 31
codec = "zlib"
keep = 3
min_free = "256M"

[capture]
# kernel = "/boot/vmlinuz-..."   # default: the running kernel's
# initrd = "..."                 # default: /var/lib/kexecfw/kdump/initrd.img-<release>
append = "{DEFAULT_APPEND}"
remove = [{", ".join(f'"{r}"' for r in DEFAULT_REMOVE)}]
crashkernel = "auto"

[actions]
final = "reboot"
failure = "reboot"

[hooks]
pre = "/etc/kexecfw/kdump-pre.d"
post = "/etc/kexecfw/kdump-post.d"
"""
