"""The kernel's segment rules: each violation named, and the planner's output always passing."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kexecfw.errors import NoSpaceError, ValidationError
from kexecfw.memory.ranges import Range, subtract
from kexecfw.model import KEXEC_ON_CRASH
from kexecfw.segments.plan import Plan, Segment
from kexecfw.segments.planner import Planner
from kexecfw.segments.validate import KernelLimits, validate_plan

PAGE = 4096
ARCH = 183 << 16
CRASH = Range(0x80000000, 0x90000000)
RAM = [Range(0x40000000, 0xC0000000)]
LIMITS = KernelLimits(page_size=PAGE, kexec_arch=ARCH, total_ram_pages=(2 << 30) // PAGE, crash_region=CRASH,
                      system_ram=RAM)


def seg(name: str, mem: int, memsz: int, bufsz: int | None = None) -> Segment:
    return Segment(name, bytes(memsz if bufsz is None else bufsz), mem, memsz)


def plan(segments: list[Segment], *, panic: bool = True, entry: int | None = None, flags: int | None = None) -> Plan:
    f = (ARCH | (KEXEC_ON_CRASH if panic else 0)) if flags is None else flags
    e = segments[0].mem if entry is None and segments else (entry or 0)
    return Plan("arm64", "panic" if panic else "normal", "kexec_load", e, f, "", CRASH if panic else None, segments)


def good() -> list[Segment]:
    return [seg("kernel", 0x80000000, 0x200000), seg("initrd", 0x80200000, 0x3000), seg("dtb", 0x80203000, 0x1000)]


def test_a_good_plan_passes():
    validate_plan(plan(good()), LIMITS)
    validate_plan(plan(good(), panic=False), LIMITS)


@pytest.mark.parametrize("rule, segment, mutate", [
    ("segment_count", None, lambda p: p.segments.extend(seg(f"s{i}", 0x81000000 + i * PAGE, PAGE) for i in range(14))),
    ("flags", None, lambda p: setattr(p, "flags", p.flags | 0x100)),
    ("arch", None, lambda p: setattr(p, "flags", (62 << 16) | KEXEC_ON_CRASH)),
    ("alignment", "initrd", lambda p: p.segments.__setitem__(1, seg("initrd", 0x80200800, 0x3000))),
    ("alignment", "dtb", lambda p: p.segments.__setitem__(2, Segment("dtb", b"x", 0x80203000, 0x1800))),
    ("destination_limit", "dtb", lambda p: p.segments.__setitem__(2, Segment("dtb", b"", (1 << 64) - PAGE, PAGE))),
    ("overlap", "initrd", lambda p: p.segments.__setitem__(1, seg("initrd", 0x801FF000, 0x3000))),
    ("bufsz", "dtb", lambda p: p.segments.__setitem__(2, Segment("dtb", bytes(PAGE + 1), 0x80203000, PAGE))),
    ("crash_region", "dtb", lambda p: p.segments.__setitem__(2, seg("dtb", 0x90000000, PAGE))),
    ("crash_region", "kernel", lambda p: p.segments.__setitem__(0, seg("kernel", 0x7FFFF000, 0x2000))),
    ("entry", None, lambda p: setattr(p, "entry", 0x90000000)),
])
def test_each_rule_is_named_with_its_segment(rule, segment, mutate):
    p = plan(good())
    mutate(p)
    with pytest.raises(ValidationError) as e:
        validate_plan(p, LIMITS)
    assert (e.value.rule, e.value.segment) == (rule, segment)
    assert rule in e.value.message and "\n" not in e.value.message
    if segment:
        assert segment in e.value.message


def test_half_of_ram_rules():
    small = KernelLimits(page_size=PAGE, kexec_arch=ARCH, total_ram_pages=1000, crash_region=None, system_ram=None)
    with pytest.raises(ValidationError) as e:
        validate_plan(plan([seg("kernel", 0x40000000, 501 * PAGE)], panic=False), small)
    assert e.value.rule == "segment_size"
    with pytest.raises(ValidationError) as e:
        validate_plan(plan([seg("kernel", 0x40000000, 300 * PAGE), seg("initrd", 0x50000000, 201 * PAGE)],
                           panic=False), small)
    assert (e.value.rule, e.value.segment) == ("total_size", "initrd")


def test_normal_load_outside_ram_is_kexec_tools_rule():
    with pytest.raises(ValidationError) as e:
        validate_plan(plan([seg("kernel", 0xD0000000, PAGE)], panic=False), LIMITS)
    assert e.value.rule == "system_ram" and "kexec-tools" in e.value.message


def test_panic_without_crash_region():
    limits = KernelLimits(page_size=PAGE, kexec_arch=ARCH, total_ram_pages=1 << 20, crash_region=None)
    with pytest.raises(ValidationError, match="crashkernel="):
        validate_plan(plan(good()), limits)


# --- the planner's output passes the validator on fuzzed memory maps ------------------------

memory_maps = st.lists(st.tuples(st.integers(0, 1 << 22), st.integers(1, 1 << 14)), min_size=1, max_size=8).map(
    lambda pairs: [Range(a * PAGE, (a + n) * PAGE) for a, n in pairs])
requests = st.lists(st.tuples(st.integers(1, 1 << 22), st.sampled_from([PAGE, 1 << 16, 2 << 20]), st.booleans()),
                    min_size=1, max_size=10)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(memory_maps, requests, st.booleans())
def test_planner_output_always_passes(ram, reqs, panic):
    ram_total = sum(r.size for r in ram)
    crash = max(ram, key=lambda r: r.size) if panic else None
    planner = Planner([crash] if panic else ram, page_size=PAGE)
    for i, (size, align, top) in enumerate(reqs):
        try:
            planner.add(f"s{i}", bytes(min(size, 1 << 12)), memsz=size, align=align, top_down=top)
        except NoSpaceError as e:
            assert "\n" not in e.message
    if not planner.segments:
        return
    p = Plan("arm64", "panic" if panic else "normal", "kexec_load", planner.segments[0].mem,
             ARCH | (KEXEC_ON_CRASH if panic else 0), "", crash, planner.segments)
    limits = KernelLimits(page_size=PAGE, kexec_arch=ARCH, total_ram_pages=(1 << 64) // PAGE, crash_region=crash,
                          system_ram=ram)
    validate_plan(p, limits)
    assert not subtract([s.range for s in planner.segments], [crash] if panic else ram)


def test_too_small_crash_region_says_how_much_is_needed():
    planner = Planner([Range(0x80000000, 0x80000000 + (64 << 20))], page_size=PAGE, what="the crash region")
    planner.add("kernel", b"", memsz=40 << 20)
    with pytest.raises(NoSpaceError, match=r"need at least 70 MiB .* has 64 MiB"):
        planner.add("initrd", b"", memsz=30 << 20)
