"""The capture side's architectures: each plugin's ``capture`` module describes its ELF machine.

The dump readers (``vmcore dmesg|info|notes|save``) run without the plugin manager: ``vmcore dmesg``
must start about as fast as the interpreter in a capture kernel, and pluggy, importlib.metadata,
dataclasses or typing would each cost more than the rest of its start-up. So an architecture plugin
package has a light ``capture`` module (importing only the dump readers' own modules) whose
``CAPTURE`` is a :class:`MachineCapture`: the machine's name, page sizes and physical address bits,
its NT_PRSTATUS register layout, its virtual-to-physical translator. Importing it must not import
the plugin's hooks: the plugin package's ``__init__`` stays light (see plugins/*/__init__.py).

Where they are found, on the first dump of each machine:

1. the built-in architectures' (:data:`BUILTIN_ARCHITECTURES`), by module name: no metadata read;
2. then the ``kexecfw`` entry points (as the plugin manager finds third-party architectures): the
   ``capture`` module of each entry point's package, if it has one. Only a machine no built-in
   serves pays for reading the installed distributions' metadata.

Adding an architecture's capture support is a plugin's ``capture.py``; the core names no machine.
The plugin manager's switches apply here too: KEXECFW_BLOCK_PLUGINS (names of entry points or
built-ins), KEXECFW_DISABLE_PLUGIN_AUTOLOAD (no entry points).
"""
from __future__ import annotations

import os
import sys

from kexecfw.records import TupleRecord

# The in-repo architectures registered by module name (the plugin manager registers their hooks).
BUILTIN_ARCHITECTURES = ("kexecfw.plugins.arm64", "kexecfw.plugins.x86_64", "kexecfw.plugins.riscv64")
ENTRY_POINT_GROUP = "kexecfw"
CAPTURE_MODULE = "capture"


def blocked_plugins() -> set[str]:
    """KEXECFW_BLOCK_PLUGINS: the plugin names (built-in or entry point) not to use."""
    return {n.strip() for n in os.environ.get("KEXECFW_BLOCK_PLUGINS", "").split(",") if n.strip()}


def entry_points_disabled() -> bool:
    """KEXECFW_DISABLE_PLUGIN_AUTOLOAD set (and not 0): no ``kexecfw`` entry point is read."""
    return os.environ.get("KEXECFW_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0")


class RegisterLayout(tuple):
    """The register names of NT_PRSTATUS ``pr_reg`` (unsigned longs of the architecture), in order, and
    which of them hold the program counter, the stack pointer and the link register (None: the return
    address is on the stack, as on x86_64)."""

    pc: str
    sp: str
    lr: str | None

    def __new__(cls, names: "list[str] | tuple[str, ...]", *, pc: str, sp: str,
                lr: str | None = None) -> "RegisterLayout":
        layout = super().__new__(cls, names)
        unknown = [r for r in (pc, sp, lr) if r is not None and r not in layout]
        if unknown or len(set(layout)) != len(layout):
            raise ValueError(f"register layout: {unknown or 'duplicate names'} (names: {', '.join(layout)})")
        layout.pc, layout.sp, layout.lr = pc, sp, lr
        return layout

    def roles(self) -> dict[str, str]:
        """{"pc": name, "sp": name, "lr": name} for the roles the architecture has."""
        return {role: name for role, name in (("pc", self.pc), ("sp", self.sp), ("lr", self.lr)) if name}


class MachineCapture(TupleRecord):
    """What the dump readers need to know about one ELF machine (a plugin's ``capture.CAPTURE``)."""
    elf_machine: int              # ELF e_machine of its dumps
    uts_machines: tuple           # utsname.machine of its kernels (a kdump header names the machine so)
    bounds: object                # kexecfw.vmcore.bounds.ArchBounds: name, page sizes, physical address bits
    registers: RegisterLayout     # NT_PRSTATUS pr_reg
    translator: object            # (VMCOREINFO as CheckedInfo) -> kexecfw.vmcore.kmem.Translator
    # kallsyms_offsets hold absolute per-CPU addresses (CONFIG_KALLSYMS_ABSOLUTE_PERCPU, x86_64 before 6.15)
    kallsyms_absolute_percpu: bool = False

    @property
    def name(self) -> str:
        return self.bounds.name


# What was found, for the sys.path and switches it was found with (tests and notebooks change them).
_found: dict[object, MachineCapture | None] = {}
_found_with: tuple = ()


def machine_capture(machine: int) -> MachineCapture | None:
    """The capture facts of ELF ``machine``, or None when no installed architecture plugin has them."""
    return _cached(machine, lambda c: c.elf_machine == machine)


def machine_for_uts(uts_machine: str) -> int:
    """The ELF machine of kernels whose utsname.machine is ``uts_machine`` (0 when no plugin knows it)."""
    found = _cached(uts_machine, lambda c: uts_machine in c.uts_machines)
    return found.elf_machine if found is not None else 0


def _cached(key: object, wanted) -> MachineCapture | None:
    global _found_with, _entry_points
    now = (tuple(sys.path), os.environ.get("KEXECFW_BLOCK_PLUGINS"), entry_points_disabled())
    if now != _found_with:
        _found.clear()
        _entry_points = None
        _found_with = now
    if key not in _found:
        _found[key] = _find(wanted)
    return _found[key]


def _find(wanted) -> MachineCapture | None:
    """The first capture description ``wanted`` accepts: the built-ins', else the entry points'."""
    blocked = blocked_plugins()
    for package in BUILTIN_ARCHITECTURES:
        if package.rsplit(".", 1)[-1] not in blocked:
            capture = _capture_of(package)
            if capture is not None and wanted(capture):
                return capture
    if entry_points_disabled():
        return None
    for name, package in _entry_point_packages():
        if name not in blocked and package not in BUILTIN_ARCHITECTURES:
            capture = _capture_of(package)
            if capture is not None and wanted(capture):
                return capture
    return None


_captures: dict[str, MachineCapture | None] = {}


def _capture_of(package: str) -> MachineCapture | None:
    """``package``'s capture.CAPTURE, or None when it has no capture module."""
    if package not in _captures:
        module_name = f"{package}.{CAPTURE_MODULE}"
        try:
            __import__(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:       # the package is missing, or its capture module imports what is
                from kexecfw.errors import KexecfwError
                raise KexecfwError(f"cannot import {module_name} ({e}): the installation of kexecfw or of that "
                                   "architecture plugin is broken; reinstall it") from None
            _captures[package] = None       # a plugin without a capture side
            return None
        capture = getattr(sys.modules[module_name], "CAPTURE", None)
        if not isinstance(capture, MachineCapture):
            from kexecfw.errors import KexecfwError
            raise KexecfwError(f"{module_name} has no CAPTURE = kexecfw.machines.MachineCapture(...); "
                               "fix or uninstall that architecture plugin")
        _captures[package] = capture
    return _captures[package]


_entry_points: list[tuple[str, str]] | None = None


def _entry_point_packages() -> list[tuple[str, str]]:
    """(name, module) of each ``kexecfw`` entry point, read once."""
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points
        _entry_points = [(ep.name, ep.module) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return _entry_points
