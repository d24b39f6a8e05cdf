"""The plugin manager and a typed facade over the hook calls.

Registration order: the core's generic defaults, the in-repo architectures
(built-ins, registered by module), then the ``kexecfw`` entry-point group
(third-party architectures; names already registered are skipped), then
``check_pending()`` so a misspelt hook name fails loudly. A plugin package is
registered through its ``hooks`` module when it has one (:func:`hook_module`):
its ``capture`` module then serves the dump readers without the hooks
(kexecfw.machines).

By default the entry points are read on demand: only when an architecture (or
an ELF machine) is asked for that no registered plugin serves, and for the full
list (:meth:`Hooks.architectures`, :func:`describe_plugins`). Reading them means
importing importlib.metadata and scanning every installed distribution, which
costs a ``load -p`` of a built-in architecture in an emulated guest a few hundred
milliseconds for nothing.

Environment switches:
  KEXECFW_DISABLE_PLUGIN_AUTOLOAD=1  do not load entry points
  KEXECFW_BLOCK_PLUGINS=a,b          do not register these plugin names
  KEXECFW_TRACE_HOOKS=1              print each hook call and result to stderr
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Iterable

import pluggy

from kexecfw import hookspecs
from kexecfw.errors import KexecfwError
from kexecfw.machines import (BUILTIN_ARCHITECTURES, ENTRY_POINT_GROUP, blocked_plugins, entry_points_disabled,
                              machine_capture)
from kexecfw.records import Record

BUILTIN_PLUGINS = BUILTIN_ARCHITECTURES
CORE_PLUGIN = "kexecfw.defaults"
HOOKS_MODULE = "hooks"

_manager: pluggy.PluginManager | None = None
# Set on a manager whose entry-point plugins are not loaded yet (see load_deferred_plugins); an attribute,
# not a weakref.WeakSet of managers: weakref is an import a load would make for this alone.
DEFERRED_ATTRIBUTE = "_kexecfw_deferred_entry_points"


def new_plugin_manager(*, builtins: Iterable[str] = BUILTIN_PLUGINS, entry_points: bool | None = None,
                       extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """A fresh manager (tests and notebooks use this to register toy plugins).

    ``entry_points``: True loads the ``kexecfw`` entry points now, False never, None (default) when
    first needed (see the module docstring), unless KEXECFW_DISABLE_PLUGIN_AUTOLOAD is set.
    """
    pm = pluggy.PluginManager("kexecfw")
    pm.add_hookspecs(hookspecs)
    blocked = blocked_plugins()
    for name in blocked:
        pm.set_blocked(name)
    pm.register(importlib.import_module(CORE_PLUGIN), name="core")
    for module_name in builtins:
        short = module_name.rsplit(".", 1)[-1]
        if short in blocked:
            continue
        pm.register(hook_module(importlib.import_module(module_name)), name=short)
    for plugin in extra:
        pm.register(plugin, name=_plugin_name(plugin))
    if entry_points is None and entry_points_disabled():
        entry_points = False
    if entry_points:
        _load_entry_points(pm)
    elif entry_points is None:
        setattr(pm, DEFERRED_ATTRIBUTE, True)
    pm.check_pending()
    if os.environ.get("KEXECFW_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def load_deferred_plugins(pm: pluggy.PluginManager) -> bool:
    """Load ``pm``'s entry-point plugins if they were deferred; False when there was nothing to load."""
    if not getattr(pm, DEFERRED_ATTRIBUTE, False):
        return False
    setattr(pm, DEFERRED_ATTRIBUTE, False)
    _load_entry_points(pm)
    pm.check_pending()
    return True


def hook_module(plugin: object) -> object:
    """What to register for ``plugin``: a package's ``hooks`` module when it has one (so that its light
    ``capture`` module imports no hook code, see kexecfw.machines), else ``plugin`` itself."""
    if not hasattr(plugin, "__path__"):
        return plugin
    name = f"{plugin.__name__}.{HOOKS_MODULE}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return plugin


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register the ``kexecfw`` entry points' plugins (through :func:`hook_module`), as pluggy's
    load_setuptools_entrypoints does: names already registered or blocked are skipped."""
    from importlib.metadata import entry_points
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is None and not pm.is_blocked(ep.name):
            pm.register(hook_module(ep.load()), name=ep.name)


def _plugin_name(plugin: object) -> str:
    """A readable registration name: a module's last dotted part, else the class name in lower case."""
    module_name = getattr(plugin, "__name__", None)
    if isinstance(module_name, str):
        parts = module_name.split(".")
        return parts[-2] if parts[-1] == HOOKS_MODULE and len(parts) > 1 else parts[-1]
    return type(plugin).__name__.lower()


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = new_plugin_manager()
    return _manager


class Hooks:
    """Typed calls of the hooks (pluggy returns Any); one method per hook the core calls."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm or plugin_manager()
        self.hook = self.pm.hook
        # (the registered plugins, {architecture name: the plugins that serve other architectures})
        self._others: tuple[frozenset[object], dict[str, frozenset[object]]] = (frozenset(), {})
        self._callers: dict[tuple[str, str], Any] = {}

    def _serving(self) -> dict[str, frozenset[object]]:
        """For each architecture, the plugins that serve another one, recomputed when a plugin is
        registered or unregistered (the deferred entry points, a notebook's toy)."""
        plugins = frozenset(self.pm.get_plugins())
        if plugins != self._others[0]:
            serves: dict[object, set[str]] = {}
            for impl in self.hook.kexecfw_architectures.get_hookimpls():
                serves[impl.plugin] = {spec.name for spec in impl.function()}
            archs = set().union(*serves.values())
            others = {arch: frozenset(p for p, names in serves.items() if arch not in names) for arch in archs}
            self._others = (plugins, others)
            self._callers.clear()
        return self._others[1]

    def for_arch(self, arch: str, hook: str) -> Any:
        """``hook`` called on the plugin that serves ``arch`` (and on the plugins that serve no architecture:
        the core's defaults, observers), never on another architecture's plugin."""
        others = self._serving().get(arch, frozenset())
        caller = self._callers.get((arch, hook))
        if caller is None:
            caller = self._callers[(arch, hook)] = self.pm.subset_hook_caller(hook, others)
        return caller

    def _call(self, ctx: "LoadContext", hook: str, **kwargs: Any) -> Any:
        return self.for_arch(ctx.arch.name, hook)(ctx=ctx, **kwargs)

    def _for_machine(self, machine: int, hook: str) -> Any | None:
        spec = self.arch_for_machine(machine)
        return None if spec is None else self.for_arch(spec.name, hook)

    def architectures(self) -> list["ArchSpec"]:
        """Every architecture, the entry-point plugins' included."""
        load_deferred_plugins(self.pm)
        return self._registered_architectures()

    def _registered_architectures(self) -> list["ArchSpec"]:
        specs: list[ArchSpec] = []
        for result in self.hook.kexecfw_architectures():
            specs.extend(result)
        return specs

    def _find_architecture(self, wanted: Callable[["ArchSpec"], bool]) -> "ArchSpec | None":
        """The first architecture ``wanted`` accepts, among the registered plugins, else after
        loading the deferred entry-point plugins."""
        while True:
            spec = next((s for s in self._registered_architectures() if wanted(s)), None)
            if spec is not None or not load_deferred_plugins(self.pm):
                return spec

    def arch(self, name: str) -> "ArchSpec":
        spec = self._find_architecture(lambda s: s.matches(name))
        if spec is not None:
            return spec
        known = ", ".join(sorted(s.name for s in self.architectures())) or "none"
        raise KexecfwError(f"no plugin serves architecture {name!r} (installed: {known}); "
                           "install its plugin package or pick one with --arch")

    def arch_for_machine(self, machine: int) -> "ArchSpec | None":
        return self._find_architecture(lambda s: s.elf_machine == machine)

    def memory_map(self, ctx: "LoadContext") -> "MemoryMap":
        return self._call(ctx, "kexecfw_memory_map")

    def probe_kernel(self, ctx: "LoadContext", kernel_file: "KernelFile") -> "KernelImage | None":
        return self._call(ctx, "kexecfw_probe_kernel", kernel_file=kernel_file)

    def place_kernel(self, ctx: "LoadContext", planner: "Planner") -> int:
        entry = self._call(ctx, "kexecfw_place_kernel", planner=planner)
        if entry is None:
            raise KexecfwError(f"the {ctx.arch.name} plugin cannot place a kernel (no kexecfw_place_kernel)")
        return int(entry)

    def place_initrd(self, ctx: "LoadContext", planner: "Planner", initrd: bytes) -> "Segment":
        return self._call(ctx, "kexecfw_place_initrd", planner=planner, initrd=initrd)

    def elfcore_info(self, ctx: "LoadContext") -> "ElfcoreInfo | None":
        return self._call(ctx, "kexecfw_elfcore_info")

    def boot_params(self, ctx: "LoadContext", planner: "Planner", kernel_entry: int) -> bool:
        return bool(self._call(ctx, "kexecfw_boot_params", planner=planner, kernel_entry=kernel_entry))

    def purgatory(self, ctx: "LoadContext", planner: "Planner", kernel_entry: int) -> "PurgatoryObject | None":
        return self._call(ctx, "kexecfw_purgatory", planner=planner, kernel_entry=kernel_entry)

    def relocation_types(self, machine: int) -> "dict[int, tuple[str, RelocationApplier]]":
        caller = self._for_machine(machine, "kexecfw_relocation_types")
        return (caller(machine=machine) if caller is not None else None) or {}

    def finalize_plan(self, ctx: "LoadContext", plan: "Plan") -> None:
        self._call(ctx, "kexecfw_finalize_plan", plan=plan)

    def plan_load(self, ctx: "LoadContext") -> "Plan":
        return self._call(ctx, "kexecfw_plan_load")

    def prstatus_registers(self, machine: int) -> "RegisterLayout | None":
        """NT_PRSTATUS's register layout of ELF ``machine``: its plugin's capture module's (kexecfw.machines)."""
        capture = machine_capture(machine)
        return None if capture is None else capture.registers

    def implemented_hooks(self, plugin: object) -> list[str]:
        return sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])


class HookRecorder:
    """Records every hook call of a plugin manager: the hook, the plugins implementing it, the result.

    Notebooks use it to watch the core call the plugins step by step::

        with HookRecorder(pm) as rec:
            plan_load(...)
        for call in rec.calls:
            print(call.hook, call.implementers, call.result)
    """

    class Call(Record):
        hook: str
        implementers: list[str]          # in pluggy's call order (last registered first)
        kwargs: dict[str, Any]
        result: Any = None
        done: bool = False

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.calls: list[HookRecorder.Call] = []
        self._undo: Any = None

    def __enter__(self) -> "HookRecorder":
        def before(hook_name: str, impls: list, kwargs: dict) -> None:
            self.calls.append(self.Call(hook_name, [i.plugin_name for i in reversed(impls)], dict(kwargs)))

        def after(outcome: Any, hook_name: str, impls: list, kwargs: dict) -> None:
            call = next(c for c in reversed(self.calls) if c.hook == hook_name and not c.done)
            call.done = True
            call.result = outcome.exception if outcome.exception is not None else outcome.get_result()

        self._undo = self.pm.add_hookcall_monitoring(before, after)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._undo:
            self._undo()


def describe_plugins(pm: pluggy.PluginManager | None = None) -> list[dict[str, Any]]:
    """Each registered plugin: name, architectures it serves, hooks it implements."""
    hooks = Hooks(pm)
    load_deferred_plugins(hooks.pm)
    out = []
    for name, plugin in hooks.pm.list_name_plugin():
        if plugin is None:
            continue
        archs: list[str] = []
        impl = getattr(plugin, "kexecfw_architectures", None)
        if impl is not None:
            archs = [a.name for a in impl()]
        out.append({"name": name, "module": getattr(plugin, "__name__", type(plugin).__name__),
                    "architectures": archs, "hooks": hooks.implemented_hooks(plugin)})
    return out


from kexecfw.model import ArchSpec  # noqa: E402  (names used in annotations)

if False:  # pragma: no cover - for type checkers only
    from kexecfw.memory.model import MemoryMap
    from kexecfw.machines import RegisterLayout
    from kexecfw.model import ElfcoreInfo, KernelFile, KernelImage, LoadContext, PurgatoryObject, RelocationApplier
    from kexecfw.segments.plan import Plan, Segment
    from kexecfw.segments.planner import Planner
