"""The short, deterministic fuzz campaign: every target on a fixed set of inputs, and the harness itself.

The long campaigns are ``scripts/fuzz.py`` (same code). A failure lists each finding: target,
exception type, file:line, the input's mutation and the exception's message; rebuild the input
with ``runner.make_input(target, index, 0, seeds.build(DIR), DEST)`` (``scripts/fuzz.py --out DIR``
saves each finding's first input).
"""
from __future__ import annotations

import os
import time

from kexecfw.errors import KexecfwError
from tests.fuzz import runner
from tests.fuzz.targets import BY_NAME, TARGETS, Target, attempt

# inputs per target: in-process parsers are fast, whole commands start an interpreter each
IN_PROCESS = int(os.environ.get("KEXECFW_FUZZ_SHORT", "120"))
CLI = max(IN_PROCESS // 10, 3)


def test_short_campaign_finds_nothing():
    in_process = [t.name for t in TARGETS if not t.cli]
    cli = [t.name for t in TARGETS if t.cli]
    a = runner.run_campaign(in_process, IN_PROCESS, jobs=2)
    b = runner.run_campaign(cli, CLI, jobs=2)
    for camp, n in ((a, IN_PROCESS), (b, CLI)):
        errors = [r for r in camp.results if r["outcome"] == "harness-error"]
        assert not errors, errors[:5]
        for name, s in camp.stats.items():
            assert s.inputs == n, (name, s)
            assert s.ok + s.rejected + s.findings == n
    lines = a.finding_lines() + b.finding_lines()
    assert not lines, f"{len(lines)} distinct findings:\n" + "\n".join(lines)


# --- the harness finds what it should ----------------------------------------------------------

def _raises(path, ctx, seed):
    {}["no such key"]


def _multi_line(path, ctx, seed):
    attempt(ctx, lambda: (_ for _ in ()).throw(KexecfwError("first line\nsecond line")))


def _spins(path, ctx, seed):
    while True:
        time.sleep(0.01)


def _hogs_memory(path, ctx, seed):
    return bytearray(1 << 31)       # past the worker's address-space limit


def _dies(path, ctx, seed):
    os._exit(9)


def test_harness_reports_everything_but_a_clean_rejection():
    toys = {"selftest-exception": _raises, "selftest-multiline": _multi_line, "selftest-timeout": _spins,
            "selftest-memory": _hogs_memory, "selftest-death": _dies}
    for name, fn in toys.items():
        BY_NAME[name] = Target(name, ("crashkernel",), fn)
    try:
        camp = runner.run_campaign(list(toys), 1, jobs=2, limits=runner.Limits(time_s=2.0, address_space=1 << 30))
    finally:
        for name in toys:
            del BY_NAME[name]
    kinds = {k[0]: (k[1], k[2]) for k in camp.findings}
    assert kinds["selftest-exception"] == ("KeyError", f"tests/fuzz/test_fuzz_short.py:{_raises.__code__.co_firstlineno + 1}")
    assert kinds["selftest-multiline"][0] == "multi-line or empty KexecfwError"
    assert kinds["selftest-timeout"][0] == "timeout"
    assert kinds["selftest-memory"][0] == "MemoryError"
    assert kinds["selftest-death"] == ("worker died", "exit 9")
    assert all(v["mutation"].startswith("crashkernel-") for v in camp.findings.values())


def test_inputs_are_deterministic(tmp_path):
    from tests.fuzz import seeds
    seed_list = seeds.build(tmp_path / "seeds")
    made = []
    for run in range(2):
        d = tmp_path / f"run{run}"
        d.mkdir()
        out = []
        for target in ("dump-kdump", "dump-split", "load-sysroot", "purgatory-link", "crashkernel-parse"):
            sub = d / target
            sub.mkdir()
            seed, path, m = runner.make_input(target, 7, 0, seed_list, sub)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            out.append((seed.id, m.desc, [f.read_bytes() for f in files]))
        made.append(out)
    assert made[0] == made[1]
