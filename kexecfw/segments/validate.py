"""The kernel's rules for kexec_load segments, checked before any syscall.

Each rule is the kernel's (kernel/kexec_core.c sanity_check_segment_list,
kernel/kexec.c kexec_load_check and kimage_crash_alloc, 6.1); where the kernel
would answer a bare EINVAL or EADDRNOTAVAIL, we name the rule and the
segment. One rule is kexec-tools' rather than the kernel's and says so:
segments of a normal load must lie in System RAM (the kernel copies them
there at exec time and would scribble over device memory otherwise).
"""
from __future__ import annotations

from kexecfw.errors import ValidationError
from kexecfw.memory.ranges import Range, merge
from kexecfw.model import (KEXEC_ARCH_MASK, KEXEC_ON_CRASH, KEXEC_PRESERVE_CONTEXT, KEXEC_SEGMENT_MAX,
                           KEXEC_UPDATE_ELFCOREHDR)
from kexecfw.records import Record
from kexecfw.segments.plan import Plan

KEXEC_FLAGS = KEXEC_ON_CRASH | KEXEC_PRESERVE_CONTEXT | KEXEC_UPDATE_ELFCOREHDR
# KEXEC_DESTINATION_MEMORY_LIMIT is -1UL on every architecture we serve
DESTINATION_LIMIT = (1 << 64) - 1

RULES = ("segment_count", "flags", "arch", "alignment", "destination_limit", "overlap", "bufsz",
         "segment_size", "total_size", "crash_region", "entry", "system_ram")


class KernelLimits(Record, frozen=True):
    """What the running kernel checks against."""

    page_size: int
    kexec_arch: int                 # this architecture's KEXEC_ARCH_* value
    total_ram_pages: int            # totalram_pages(): MemTotal / page size
    crash_region: Range | None      # crashk_res (the main one, not the low one)
    system_ram: list[Range] | None = None   # for the kexec-tools rule; None skips it


def _fail(rule: str, segment: str | None, message: str) -> None:
    raise ValidationError(rule, segment, f"invalid plan ({rule}): {message}")


def validate_plan(plan: Plan, limits: KernelLimits) -> None:
    """Raise :class:`ValidationError` for the first rule the plan breaks, in the kernel's order."""
    if plan.syscall != "kexec_load":
        return  # kexec_file_load: the kernel builds and checks the segments itself
    segs = plan.segments
    page = limits.page_size
    if len(segs) > KEXEC_SEGMENT_MAX:
        _fail("segment_count", None, f"{len(segs)} segments, the kernel takes at most {KEXEC_SEGMENT_MAX}")
    if plan.flags & ~(KEXEC_FLAGS | KEXEC_ARCH_MASK):
        _fail("flags", None, f"unknown flag bits {plan.flags & ~(KEXEC_FLAGS | KEXEC_ARCH_MASK):#x}")
    arch = plan.flags & KEXEC_ARCH_MASK
    if arch not in (0, limits.kexec_arch):
        _fail("arch", None, f"KEXEC_ARCH {arch >> 16} in the flags is not this kernel's ({limits.kexec_arch >> 16})")
    for s in segs:
        mend = s.mem + s.memsz
        if s.mem % page or mend % page:
            _fail("alignment", s.name, f"{s.name} at {s.mem:#x}+{s.memsz:#x} is not page-aligned ({page:#x})")
        if mend >= DESTINATION_LIMIT:
            _fail("destination_limit", s.name, f"{s.name} ends at {mend:#x}, beyond the destination limit")
    for i, s in enumerate(segs):
        for t in segs[:i]:
            if s.mem + s.memsz > t.mem and s.mem < t.mem + t.memsz:
                _fail("overlap", s.name, f"{s.name} {s.range} overlaps {t.name} {t.range}")
    for s in segs:
        if s.bufsz > s.memsz:
            _fail("bufsz", s.name, f"{s.name} has bufsz {s.bufsz:#x} > memsz {s.memsz:#x}")
    half = limits.total_ram_pages // 2
    total = 0
    for s in segs:
        pages = (s.memsz + page - 1) // page
        if pages > half:
            _fail("segment_size", s.name, f"{s.name} is {pages} pages, more than half of RAM ({half} pages)")
        total += pages
        if total > half:
            _fail("total_size", s.name, f"the segments up to {s.name} take {total} pages, more than half of "
                                        f"RAM ({half} pages)")
    if plan.flags & KEXEC_ON_CRASH:
        crash = limits.crash_region
        if crash is None:
            _fail("crash_region", None, "a panic load needs a crashkernel= reservation; none is present")
        for s in segs:
            if s.mem < crash.start or s.mem + s.memsz - 1 > crash.last:
                _fail("crash_region", s.name, f"{s.name} {s.range} is outside the crash region {crash}")
        if not (crash.start <= plan.entry <= crash.last):
            _fail("entry", None, f"entry {plan.entry:#x} is outside the crash region {crash}")
    elif limits.system_ram is not None:
        ram = merge(limits.system_ram)  # adjacent RAM resources are one contiguous range
        for s in segs:
            if not any(r.contains(s.range) for r in ram):
                _fail("system_ram", s.name, f"{s.name} {s.range} is not inside System RAM (kexec-tools' rule)")
