#!/usr/bin/env python3
"""Long fuzz campaigns (run by hand, like bench/run.py): every parser and every whole command on
structure-aware mutations of the lab's real data, each input in a worker with a time and an
address-space limit.

    .venv/bin/python scripts/fuzz.py --per-target 10000 --jobs 2 --out fuzz-results/ [--targets a,b]

Prints a Markdown table (for the README) and the distinct findings; writes fuzz-results/summary.json
and one reproducer per finding (fuzz-results/reproducers/NNN-TARGET/). Exit 1 when anything was
found. The harness is tests/fuzz/ (the CI test tests/fuzz/test_fuzz_short.py runs its short form).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz import runner  # noqa: E402
from tests.fuzz.targets import BY_NAME, TARGETS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-target", type=int, default=1000, metavar="N", help="inputs per target (default 1000)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="summary.json and reproducers go here")
    p.add_argument("--targets", default=None, metavar="A,B", help="only these targets (default: all)")
    p.add_argument("--skip-cli", action="store_true", help="only the in-process parsers (no whole commands)")
    p.add_argument("--campaign", type=int, default=0, metavar="N",
                   help="campaign number: another number gives other inputs (default 0, the CI test's)")
    p.add_argument("--time-limit", type=float, default=10.0, metavar="S", help="seconds per input (default 10)")
    p.add_argument("--memory", type=int, default=2048, metavar="MIB", help="address-space limit per worker (MiB)")
    p.add_argument("--real-kernels", action="store_true",
                   help="also mutate the Debian kernels the lab downloaded, when its cache has them")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args()
    if args.list:
        for t in TARGETS:
            print(f"{t.name:28} {'command' if t.cli else 'parser':8} seeds: {', '.join(t.kinds)}")
        return 0
    names = args.targets.split(",") if args.targets else [t.name for t in TARGETS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; --list shows them")
    if args.skip_cli:
        names = [n for n in names if not BY_NAME[n].cli]
    total = len(names) * args.per_target
    t0 = time.monotonic()
    done = [0]

    def progress(res: dict) -> None:
        done[0] += 1
        if res["outcome"] == "finding":
            print(f"finding: {res['target']} #{res['index']}: {res.get('type')} at {res.get('where')}: "
                  f"{res.get('mutation', '?')}: {res.get('detail', '')}", file=sys.stderr)
        if done[0] % 500 == 0 or done[0] == total:
            print(f"{done[0]}/{total} inputs, {time.monotonic() - t0:.0f} s", file=sys.stderr)

    camp = runner.run_campaign(names, args.per_target, jobs=args.jobs, campaign=args.campaign,
                               limits=runner.Limits(args.time_limit, args.memory << 20), out=args.out,
                               real_kernels=args.real_kernels, progress=progress)
    print(camp.markdown())
    lines = camp.finding_lines()
    print(f"\n{len(lines)} distinct findings in {sum(s.inputs for s in camp.stats.values())} inputs "
          f"({time.monotonic() - t0:.0f} s wall)")
    for line in lines:
        print(f"- {line}")
    if args.out:
        print(f"\nsummary and reproducers: {args.out}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
