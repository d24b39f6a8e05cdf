"""Run a campaign: inputs in worker processes with a time and an address-space limit, findings collected.

Each input is (target, index): the worker derives the seed and the mutation from
``random.Random(f"{campaign}/{target}/{index}")``, so the parent can rebuild any input (the
reproducer of a finding) without the worker. A worker runs one input at a time under RLIMIT_AS and
an interval timer; if it does not answer within the limit plus a grace period the parent kills it,
records a finding for that input and starts another. A finding is keyed by (target, exception type,
file:line of the innermost frame in kexecfw or the plugins) and counted once per key.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from kexecfw.errors import KexecfwError
from kexecfw.guard import TEST_SESSION_ENV
from tests.fuzz import mutators, seeds as seeds_mod
from tests.fuzz.targets import BY_NAME, REPO, Context, Finding, seeds_for

GRACE = 15.0       # seconds the parent waits past the time limit before killing a worker


class InputTimeout(BaseException):
    """Raised by the interval timer: a BaseException so that no ``except Exception`` swallows it."""


@dataclass
class Limits:
    time_s: float = 10.0
    address_space: int = 2 << 30


def input_rng(campaign: int, target: str, index: int) -> random.Random:
    return random.Random(f"{campaign}/{target}/{index}")


def make_input(target_name: str, index: int, campaign: int, seeds: list, dest_dir: Path):
    """Build input ``index`` of ``target_name`` under ``dest_dir``; returns (seed, path, mutation)."""
    target = BY_NAME[target_name]
    rng = input_rng(campaign, target_name, index)
    choices = seeds_for(target, seeds)
    seed = choices[rng.randrange(len(choices))]
    src = Path(seed.path)
    dest = dest_dir / (src.name if src.is_dir() else "input" + "".join(src.suffixes)[:16])
    mutation = mutators.mutate(seed, rng, dest)
    return seed, dest, mutation


def _frame(tb) -> str:
    """file:line of the innermost frame in kexecfw or the plugins (else the innermost of all)."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if ("/kexecfw/" in f.filename or "/plugins/" in f.filename)
            and "/tests/fuzz/" not in f.filename]
    f = (ours or frames)[-1] if frames else None
    if f is None:
        return "?"
    name = f.filename.replace(str(REPO) + "/", "")
    i = name.find("kexecfw/")
    return f"{name[i:] if i >= 0 and not name.startswith('plugins/') else name}:{f.lineno}"


def _type_name(e: BaseException) -> str:
    """zlib.error, struct.error, not just "error"."""
    t = type(e)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def run_input(target_name: str, index: int, campaign: int, seeds: list, by_id: dict, work: Path,
              cache: dict, limits: Limits) -> dict:
    """Run one input in this process; the outcome as a JSON-able dict."""
    target = BY_NAME[target_name]
    in_dir = work / "in"
    scratch = work / "scratch"
    for d in (in_dir, scratch):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    t0 = time.monotonic()
    res = {"target": target_name, "index": index}
    try:
        seed, path, mutation = make_input(target_name, index, campaign, seeds, in_dir)
    except Exception as e:  # a harness bug: say so, do not count it against the code under test
        return {**res, "outcome": "harness-error", "detail": f"{type(e).__name__}: {e} at {_frame(e.__traceback__)}"}
    res.update(seed=seed.id, mutation=mutation.desc)
    ctx = Context(scratch=scratch, seeds=by_id, cache=cache, time_limit=limits.time_s, index=index)

    def alarm(signum, frame):
        raise InputTimeout()
    old = signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            # CLI targets time out in subprocess.run first; the timer is their backstop
            signal.setitimer(signal.ITIMER_REAL, limits.time_s + (5 if target.cli else 0))
            if target.wants_lossy:
                target.run(path, ctx, seed, mutation.lossy)
            else:
                target.run(path, ctx, seed)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)     # the handlers below run without the timer
        res.update(outcome="rejected" if ctx.rejections else "ok",
                   message=ctx.rejections[0].replace(f"{in_dir}/", "")[:200] if ctx.rejections else None)
    except Finding as f:
        res.update(outcome="finding", type=f.kind, where=f.where, detail=f.detail)
    except InputTimeout as e:
        res.update(outcome="finding", type="timeout", where=_frame(e.__traceback__),
                   detail=f"more than {limits.time_s:.0f} s")
    except MemoryError as e:
        res.update(outcome="finding", type="MemoryError", where=_frame(e.__traceback__),
                   detail=f"address space limit {limits.address_space >> 20} MiB")
    except KexecfwError as e:    # raised outside attempt(): a target's own bug, still one line?
        res.update(outcome="rejected", message=e.message[:200])
    except Exception as e:
        res.update(outcome="finding", type=_type_name(e), where=_frame(e.__traceback__),
                   detail=str(e)[:200])
    finally:
        signal.signal(signal.SIGALRM, old)
    res["seconds"] = round(time.monotonic() - t0, 3)
    return res


def _worker(conn, seed_dir: str, campaign: int, limits: Limits, work: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
    seeds = seeds_mod.load(seed_dir)
    by_id = {s.id: s for s in seeds}
    cache: dict = {}
    while True:
        task = conn.recv()
        if task is None:
            return
        target, index = task
        try:
            res = run_input(target, index, campaign, seeds, by_id, Path(work), cache, limits)
        except MemoryError:
            res = {"target": target, "index": index, "outcome": "finding", "type": "MemoryError",
                   "where": "harness", "detail": "out of memory outside the target"}
        conn.send(res)


class _Worker:
    def __init__(self, n: int, seed_dir: str, campaign: int, limits: Limits, base: Path) -> None:
        self.work = base / f"w{n}"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, seed_dir, campaign, limits, str(self.work)), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[str, int] | None = None
        self.started = 0.0

    def give(self, task: tuple[str, int]) -> None:
        self.task = task
        self.started = time.monotonic()
        self.conn.send(task)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()


@dataclass
class TargetStats:
    inputs: int = 0
    ok: int = 0
    rejected: int = 0
    findings: int = 0
    harness_errors: int = 0
    seconds: float = 0.0
    messages: dict = field(default_factory=dict)


@dataclass
class Campaign:
    results: list[dict]
    stats: dict[str, TargetStats]
    findings: dict[tuple[str, str, str], dict]     # key -> first result, with "count"

    def to_json(self) -> dict:
        return {"targets": {k: {"inputs": s.inputs, "ok": s.ok, "rejected": s.rejected, "findings": s.findings,
                                "harness_errors": s.harness_errors, "seconds": round(s.seconds, 1),
                                "top_rejections": sorted(s.messages.items(), key=lambda kv: -kv[1])[:5]}
                            for k, s in self.stats.items()},
                "findings": [{"target": k[0], "type": k[1], "where": k[2], **v} for k, v in self.findings.items()]}

    def markdown(self) -> str:
        rows = ["| target | inputs | ok | rejected with one line | findings | seconds |", "|---|---|---|---|---|---|"]
        for name, s in self.stats.items():
            rows.append(f"| {name} | {s.inputs} | {s.ok} | {s.rejected} | {s.findings} | {s.seconds:.0f} |")
        return "\n".join(rows)

    def finding_lines(self) -> list[str]:
        return [f"{k[0]}: {k[1]} at {k[2]} ({v['count']}x), e.g. input {v['index']} [{v.get('mutation', '?')}]: "
                f"{v.get('detail', '')}" for k, v in self.findings.items()]


def run_campaign(targets: list[str], per_target: int, jobs: int = 1, campaign: int = 0,
                 limits: Limits | None = None, out: Path | None = None, real_kernels: bool = False,
                 progress=None) -> Campaign:
    """Run ``per_target`` inputs of each target in ``jobs`` workers. With ``out``, each finding's
    first input is rebuilt there (reproducers/) and summary.json is written."""
    limits = limits or Limits()
    # the host guard of kexecfw.syscalls: no real kexec or reboot in the workers or the commands they
    # start, whatever an input does (targets only plan, but the guard does not depend on that)
    os.environ.setdefault(TEST_SESSION_ENV, "fuzz")
    base = Path(tempfile.mkdtemp(prefix="kexecfw-fuzz-"))
    try:
        seed_dir = base / "seeds"
        seed_list = seeds_mod.build(seed_dir, real_kernels=real_kernels)
        tasks = [(t, i) for i in range(per_target) for t in targets]     # interleaved: every target early
        stats = {t: TargetStats() for t in targets}
        results: list[dict] = []
        findings: dict[tuple[str, str, str], dict] = {}
        workers = [_Worker(n, str(seed_dir), campaign, limits, base) for n in range(max(1, jobs))]
        pending = list(reversed(tasks))

        def record(res: dict) -> None:
            results.append(res)
            s = stats[res["target"]]
            s.inputs += 1
            s.seconds += res.get("seconds", 0.0)
            outcome = res["outcome"]
            if outcome == "ok":
                s.ok += 1
            elif outcome == "rejected":
                s.rejected += 1
                msg = (res.get("message") or "")[:70]
                s.messages[msg] = s.messages.get(msg, 0) + 1
            elif outcome == "harness-error":
                s.harness_errors += 1
            else:
                s.findings += 1
                key = (res["target"], res["type"], res["where"])
                if key in findings:
                    findings[key]["count"] += 1
                else:
                    findings[key] = {**res, "count": 1}
            if progress:
                progress(res)

        for w in workers:
            if pending:
                w.give(pending.pop())
        while any(w.task for w in workers):
            busy = [w for w in workers if w.task]
            ready = wait([w.conn for w in busy], timeout=1.0)
            now = time.monotonic()
            for i, w in enumerate(workers):
                if not w.task:
                    continue
                res = None
                if w.conn in ready:
                    try:
                        res = w.conn.recv()
                    except (EOFError, OSError):
                        w.proc.join(1)
                        code = w.proc.exitcode
                        why = f"signal {-code}" if code and code < 0 else f"exit {code}"
                        res = {"target": w.task[0], "index": w.task[1], "outcome": "finding",
                               "type": "worker died", "where": why, "detail": f"the worker process ended ({why})",
                               "seconds": round(now - w.started, 3)}
                elif now - w.started > limits.time_s + GRACE:
                    res = {"target": w.task[0], "index": w.task[1], "outcome": "finding", "type": "timeout",
                           "where": "hung (killed)", "seconds": round(now - w.started, 3),
                           "detail": f"no answer in {limits.time_s + GRACE:.0f} s; the worker was killed"}
                    w.kill()
                if res is None:
                    continue
                if res["outcome"] == "finding" and "mutation" not in res:
                    _describe(res, campaign, seed_list, base)
                record(res)
                if not w.proc.is_alive():
                    workers[i] = w = _Worker(i, str(seed_dir), campaign, limits, base)
                w.task = None
                if pending:
                    w.give(pending.pop())
        for w in workers:
            w.stop()
        camp = Campaign(results, stats, findings)
        if out is not None:
            _save(camp, out, campaign, seed_list, base)
        return camp
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _describe(res: dict, campaign: int, seed_list: list, base: Path) -> None:
    """Fill in seed and mutation of an input whose worker died (the parent rebuilds it)."""
    d = base / "describe"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    try:
        seed, _, m = make_input(res["target"], res["index"], campaign, seed_list, d)
        res.update(seed=seed.id, mutation=m.desc)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _save(camp: Campaign, out: Path, campaign: int, seed_list: list, base: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    repro = out / "reproducers"
    for n, (key, v) in enumerate(camp.findings.items()):
        d = repro / f"{n:03d}-{key[0]}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        seed, path, m = make_input(key[0], v["index"], campaign, seed_list, d)
        v["reproducer"] = str(path)
        (d / "finding.json").write_text(json.dumps({"target": key[0], "type": key[1], "where": key[2], **v},
                                                   indent=1))
    doc = {"campaign": campaign, **camp.to_json()}
    (out / "summary.json").write_text(json.dumps(doc, indent=1))
    os.chmod(out / "summary.json", 0o644)
