"""A load plan step by step: every hook call the core made, what it returned, and the holes it left.

``record_plan`` runs the real :func:`kexecfw.load.plan_load` under a hook monitor (as
:class:`kexecfw.pluginmanager.HookRecorder` does) that also notes, for each call that got the
planner, the free holes before and the segments placed by it. The other functions turn the
plan's artifacts (``ctx.artifacts``) into rows for a notebook: the DTB's /chosen before and
after (arm64), the elfcorehdr's program headers, the purgatory's relocations and patched symbols.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kexecfw.errors import KexecfwError
from kexecfw.viz.scale import size_text as _size

if TYPE_CHECKING:
    from kexecfw.memory.ranges import Range
    from kexecfw.model import LoadContext, LoadOptions
    from kexecfw.segments.plan import Plan, Segment
    from kexecfw.sysroot import Sysroot


@dataclass
class PlanStep:
    """One hook call: which plugins implement it (call order), its result, the planner around it."""

    hook: str
    implementers: list[str]
    kwargs: dict[str, Any]
    result: Any = None
    error: BaseException | None = None
    free_before: "list[Range] | None" = None     # the planner's holes when the hook was called
    placed: "list[Segment]" = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.hook}  [{', '.join(self.implementers)}]  -> {describe_value(self.result)}"
        if self.error is not None:
            text += f"  (raised {type(self.error).__name__}: {self.error})"
        return text


@dataclass
class PlanRecording:
    plan: "Plan | None"
    ctx: "LoadContext | None"
    steps: list[PlanStep]
    error: KexecfwError | None = None   # planning stopped with this (the steps up to it are kept)


def record_plan(options: "LoadOptions", sysroot: "Sysroot", arch: str | None = None) -> PlanRecording:
    """Plan a load (no syscall) with a fresh plugin manager, recording every hook call."""
    from kexecfw.load import plan_load
    from kexecfw.pluginmanager import Hooks, new_plugin_manager

    pm = new_plugin_manager()
    steps: list[PlanStep] = []
    open_steps: list[PlanStep] = []

    def before(hook_name: str, impls: list, kwargs: dict) -> None:
        planner = kwargs.get("planner")
        step = PlanStep(hook_name, [i.plugin_name for i in reversed(impls)], dict(kwargs),
                        free_before=list(planner.free) if planner is not None else None)
        step.kwargs["_segments_before"] = len(planner.segments) if planner is not None else 0
        steps.append(step)
        open_steps.append(step)

    def after(outcome: Any, hook_name: str, impls: list, kwargs: dict) -> None:
        step = open_steps.pop()
        planner = kwargs.get("planner")
        if planner is not None:
            step.placed = list(planner.segments[step.kwargs.pop("_segments_before"):])
        else:
            step.kwargs.pop("_segments_before", None)
        if outcome.exception is not None:
            step.error = outcome.exception
        else:
            step.result = outcome.get_result()

    undo = pm.add_hookcall_monitoring(before, after)
    try:
        plan, ctx = plan_load(options, sysroot, arch=arch, hooks=Hooks(pm))
    except KexecfwError as e:
        return PlanRecording(None, None, steps, e)
    finally:
        undo()
    return PlanRecording(plan, ctx, steps)


def describe_value(value: Any) -> str:
    """A one-line description of a hook's result for people (not repr of 30 MB of bytes)."""
    from kexecfw.memory.model import MemoryMap
    from kexecfw.model import ArchSpec, KernelImage
    from kexecfw.segments.plan import Plan, Segment
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, MemoryMap):
        crash = value.main_crash_region
        return (f"memory map: {len(value.regions)} regions, System RAM {_size(value.ram_size)}, crash region "
                + (f"{crash.start:#x}-{crash.last:#x} ({_size(crash.size)})" if crash else "none"))
    if isinstance(value, KernelImage):
        return f"{value.format}, payload {_size(len(value.payload))}"
    if isinstance(value, Segment):
        return f"segment {value.name} at {value.mem:#x} ({_size(value.memsz)})"
    if isinstance(value, Plan):
        return f"{value.mode} plan via {value.syscall}, {len(value.segments)} segments, entry {value.entry:#x}"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple)) for v in value):   # lists from each plugin
            value = [x for v in value for x in v]
        if value and all(isinstance(v, ArchSpec) for v in value):
            return "architectures: " + ", ".join(v.name for v in value)
        return f"{len(value)} items" if len(value) > 4 else ", ".join(describe_value(v) for v in value) or "[]"
    if isinstance(value, dict):
        return f"{len(value)} entries"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    name = type(value).__name__
    return name if len(repr(value)) > 100 else repr(value)


def format_holes(holes: "list[Range] | None") -> str:
    if not holes:
        return "-"
    return ", ".join(f"{h.start:#x}-{h.last:#x} ({_size(h.size)})" for h in holes)


def chosen_diff(ctx: "LoadContext") -> list[tuple[str, str, str]]:
    """(property, before, after) for every /chosen property the arm64 load changed.

    Needs the ``dtb_before`` and ``dtb`` artifacts of an arm64 plan; [] when the plan has no DTB.
    """
    from kexecfw.memory.devicetree import DeviceTree
    before, after = ctx.artifacts.get("dtb_before"), ctx.artifacts.get("dtb")
    if before is None or after is None:
        return []
    old = DeviceTree.from_bytes(before, "DTB before").properties("/chosen")
    new = DeviceTree.from_bytes(bytes(after), "DTB after").properties("/chosen")
    rows = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            rows.append((name, _property_text(name, old.get(name)), _property_text(name, new.get(name))))
    return rows


def _property_text(name: str, value: bytes | None) -> str:
    if value is None:
        return "(absent)"
    if name in ("kaslr-seed", "rng-seed"):
        return f"{len(value)} random bytes"
    if value.endswith(b"\0") and all(32 <= b < 127 for b in value[:-1]):
        return value[:-1].decode()
    if len(value) == 4:
        return f"<{int.from_bytes(value, 'big'):#x}>"
    if len(value) % 8 == 0 and len(value) <= 32:
        return "<" + " ".join(f"{int.from_bytes(value[i:i + 8], 'big'):#x}" for i in range(0, len(value), 8)) + ">"
    return value.hex() if len(value) <= 16 else f"{len(value)} bytes"


PT_NAMES = {1: "PT_LOAD", 4: "PT_NOTE"}


def elfcorehdr_rows(phdrs: list) -> list[tuple[str, str, str, str]]:
    """(type, paddr range, vaddr, size) for each program header of an elfcorehdr."""
    return [(PT_NAMES.get(p.type, str(p.type)), f"{p.paddr:#x}-{p.paddr + max(p.memsz, 1) - 1:#x}",
             f"{p.vaddr:#x}", _size(p.memsz)) for p in phdrs]


def purgatory_rows(ctx: "LoadContext") -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str]]]:
    """The linked purgatory's applied relocations (type, place, symbol, value) and patched symbols
    (name, address, value); ([], []) when the plan has no purgatory (kexec_file_load)."""
    linked = ctx.artifacts.get("purgatory")
    if linked is None:
        return [], []
    relocs = [(r.type_name, f"{r.place:#x}", r.symbol, f"{r.value:#x}") for r in linked.relocations]
    patched = []
    for name, value in linked.patched.items():
        shown = (f"{int.from_bytes(value, 'little'):#x}" if len(value) in (4, 8)
                 else value.hex() if len(value) <= 16 else f"{len(value)} bytes")
        patched.append((name, f"{linked.address_of(name):#x}", shown))
    return relocs, patched


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    """Rows as an aligned text table (notebooks print it)."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
