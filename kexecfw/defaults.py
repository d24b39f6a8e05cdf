"""The core's generic hook implementations (registered first, run last: ``trylast``).

An architecture plugin overrides any of them by implementing the same hook.
"""
from __future__ import annotations

from kexecfw import hookimpl
from kexecfw.memory.iomem import read_iomem
from kexecfw.memory.model import MemoryMap
from kexecfw.model import LoadContext
from kexecfw.segments.plan import Plan, Segment
from kexecfw.segments.planner import Planner


@hookimpl(trylast=True)
def kexecfw_memory_map(ctx: LoadContext) -> MemoryMap:
    return read_iomem(ctx.sysroot)


@hookimpl(trylast=True)
def kexecfw_place_initrd(ctx: LoadContext, planner: Planner, initrd: bytes) -> Segment:
    kernel = planner.get("kernel")
    low = kernel.range.end if kernel else 0
    return planner.add("initrd", initrd, min_addr=low)


@hookimpl(trylast=True)
def kexecfw_plan_load(ctx: LoadContext) -> Plan:
    from kexecfw.load import standard_plan
    return standard_plan(ctx)
