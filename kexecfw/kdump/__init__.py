"""``kexecfw kdump``: the kdump service of a Debian system (docs/kdump.md says how and why).

Every path here is absolute on the system being configured and is resolved through a root (a
:class:`kexecfw.sysroot.Sysroot`): ``/`` for the live machine, a temporary directory in tests.
Modules: ``config`` (kdump.toml), ``plan`` (what gets loaded), ``units`` (systemd units, the
kernel hook, the GRUB snippet), ``initrd`` (the capture initrd and its manifest), ``actions``
(the few commands that change the live system), ``state`` (what load and test recorded),
``dumps`` (the dumps on the target), ``save`` (the capture boot), ``hotplug`` (reloads after CPU or
memory hotplug, unless the kernel's crash_hotplug does it), ``status``, ``service``
(enable/disable/load/unload/reload).
"""
from __future__ import annotations

STATE_DIR = "/var/lib/kexecfw/kdump"
LOADED_JSON = f"{STATE_DIR}/loaded.json"
SELFTEST_JSON = f"{STATE_DIR}/selftest.json"
UNIT_DIR = "/etc/systemd/system"
LOAD_UNIT = "kexecfw-kdump.service"
SAVE_UNIT = "kexecfw-kdump-save.service"
WANTS_DIR = f"{UNIT_DIR}/basic.target.wants"
GRUB_SNIPPET = "/etc/default/grub.d/kexecfw-kdump.cfg"
POSTINST_HOOK = "/etc/kernel/postinst.d/zz-kexecfw-kdump"
NOT_ARMED = 3          # `kdump status` exit code when the machine would not save a dump (like kdumpctl)


def initrd_path(release: str) -> str:
    return f"{STATE_DIR}/initrd.img-{release}"


def manifest_path(release: str) -> str:
    return f"{STATE_DIR}/initrd.img-{release}.manifest.json"


def running_release(root) -> str:
    """The running kernel's release (``uname -r``) as the root's proc/sys/kernel/osrelease says."""
    from kexecfw.errors import BadInputError
    text = root.read_text("proc/sys/kernel/osrelease").strip()
    if not text or len(text) > 64 or "/" in text or any(c.isspace() for c in text):
        raise BadInputError(f"{root.path('proc/sys/kernel/osrelease')}: {text[:64]!r} is not a kernel release")
    return text
