"""The capture-kernel dump benchmark (bench/run.py capture): kexecfw's default save against
makedumpfile -c and -l, in the capture kernel of filled x86_64 lab guests, one guest per RAM size.

Each guest is booted once (TCG, QEMU user networking only), fills its memory, crashes, and its capture
kernel (maxcpus=1: one CPU online) runs `lab run --dump-rounds N`: N rounds of the kexecfw command's
`vmcore save -d 31 --json` (the default codec), `makedumpfile -d 31 -c` and `makedumpfile -d 31 -l`,
alternating, each under the lab's guest.py measure (wall time, peak RSS, output size). This module turns
those lab results into one JSON result (medians per tool and size, kexecfw's per-phase split from its
--json report), a Markdown table, the growth check of issue 14's goal 2 and a plot of dump time against
guest RAM.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# (step suffix in the capture kernel's round-I-SUFFIX steps, label)
TOOLS = (("kexecfw", "kexecfw save"), ("makedumpfile-c", "makedumpfile -c"), ("makedumpfile-l", "makedumpfile -l"))
REFERENCES = ("makedumpfile-c", "makedumpfile-l")
# issue 14, goal 2: 8 GiB time <= 8.5x the 1 GiB time, i.e. 1.0625x linear in guest RAM
GROWTH_SLACK = 8.5 / 8
STARTUP = "start-up and exit"   # the wall time kexecfw's own report does not cover
# where the report says when the save began in the process's life: that part, and what follows the phases
STARTED, EXITED = "start-up", "exit"
MIB = 1 << 20


def lab_result(directory: Path):
    """The lab's own reading of a results directory (kexecfw.lab.result.LabResult)."""
    try:
        from kexecfw.lab.result import LabResult
    except ImportError:          # run by an interpreter without kexecfw installed: the source tree's
        sys.path.append(str(REPO))
        from kexecfw.lab.result import LabResult
    return LabResult.load(directory)


def boot(py: str, size: str, rounds: int, keep: Path, timeout: int) -> float:
    """One filled guest of ``size`` RAM through `lab run --dump-rounds`; returns its wall seconds."""
    cmd = [py, "-m", "kexecfw", "lab", "run", "--arch", "x86_64", "--accel", "tcg", "--memory", size,
           "--fill-memory", "--dump-rounds", str(rounds), "--timeout", str(timeout), "--keep", str(keep)]
    print(f"# {' '.join(cmd[1:])}", flush=True)
    start = time.monotonic()
    with open(keep.parent / f"{keep.name}.log", "w") as log:
        code = subprocess.run(cmd, cwd="/", stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - start
    print(f"# {size}: lab run {'done' if code == 0 else f'FAILED (status {code})'} in {seconds / 60:.1f} min; "
          f"see {keep}", flush=True)
    return seconds


def save_report(text: str | None) -> dict:
    """kexecfw save's --json document from a round's stdout ({} when it is not one)."""
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        return {}
    return doc.get("dump", doc) if isinstance(doc, dict) else {}


def report_phases(report: dict) -> dict[str, float]:
    """Seconds by phase from a save report: its "phases" (a name -> seconds mapping, or a list of
    {name, seconds}) when the engine gives them; otherwise only its own total, as one phase."""
    phases = report.get("phases")
    if isinstance(phases, dict):
        return {str(k): float(v) for k, v in phases.items() if isinstance(v, (int, float))}
    if isinstance(phases, list):
        return {str(p["name"]): float(p["seconds"]) for p in phases
                if isinstance(p, dict) and "name" in p and isinstance(p.get("seconds"), (int, float))}
    if isinstance(report.get("seconds"), (int, float)):
        return {"save (no phase split)": float(report["seconds"])}
    return {}


def read_guest(directory: Path, lab_seconds: float | None = None) -> dict:
    """One lab run's rounds, summarised: per tool the median time, the largest peak RSS, the median
    output size, and for kexecfw the median of each phase (start-up and exit: wall time minus them)."""
    lab = lab_result(directory)
    measures = lab.dump_measurements()
    fill = lab.fill_report() or {}
    guest: dict = {"mem_mib": lab.settings.get("mem"), "vmcore_bytes": lab.vmcore_size(),
                   "filled_mib": fill.get("anon_mib", 0) + fill.get("page_cache_mib", 0),
                   "fill": {k: fill.get(k) for k in ("anon_mib", "page_cache_mib")},
                   "cpus_online": (lab.read_text("capture/cpus-online") or "").strip() or None,
                   "kernel_release": lab.kernel_release, "lab_ok": lab.ok, "lab_seconds": lab_seconds,
                   "qemu_seconds": lab.qemu_seconds,
                   "directory": str(directory), "rounds": lab.settings.get("dump_rounds"), "tools": {}}
    for suffix, label in TOOLS:
        runs = []
        for i in range(lab.settings.get("dump_rounds") or 0):
            m = measures.get(f"round-{i}-{suffix}")
            if m is None:
                continue
            run = {"rc": m["rc"], "seconds": m["seconds"], "max_rss_kib": m["max_rss_kib"],
                   "output_bytes": m.get("output_bytes")}
            if suffix == "kexecfw":
                report = save_report(lab.read_text(f"capture/steps/round-{i}-{suffix}.out"))
                run["phases"] = report_phases(report)
                run["engine"] = report.get("engine")
                if isinstance(report.get("started_after_seconds"), (int, float)):
                    run["started_after"] = float(report["started_after_seconds"])
            runs.append(run)
        ok = [r for r in runs if r["rc"] == 0]
        tool: dict = {"label": label, "runs": runs, "failed": len(runs) - len(ok)}
        if ok:
            tool.update(seconds=statistics.median(r["seconds"] for r in ok),
                        max_rss_mib=max(r["max_rss_kib"] for r in ok) / 1024,
                        output_bytes=int(statistics.median(r["output_bytes"] or 0 for r in ok)))
            if suffix == "kexecfw":
                tool["phases"] = median_phases(ok)
                tool["engine"] = next((r["engine"] for r in ok if r.get("engine")), None)
        guest["tools"][suffix] = tool
    return guest


def median_phases(runs: list[dict]) -> dict[str, float]:
    """Median seconds of each phase over the rounds, and of the rest of each round's wall time."""
    names = list(dict.fromkeys(name for r in runs for name in r["phases"]))
    out = {name: statistics.median(r["phases"].get(name, 0.0) for r in runs) for name in names}
    rest = [max(0.0, r["seconds"] - sum(r["phases"].values())) for r in runs]
    if all("started_after" in r for r in runs):
        out[STARTED] = statistics.median(r["started_after"] for r in runs)
        out[EXITED] = statistics.median(max(0.0, x - r["started_after"]) for x, r in zip(rest, runs))
    else:
        out[STARTUP] = statistics.median(rest)
    return out


def paired_ratio(ours: dict, theirs: dict) -> float | None:
    """Median over the rounds of the reference's time / kexecfw's in the same round: the load of a
    shared host moves both tools of a round alike, so this is steadier than the ratio of medians."""
    pairs = [b["seconds"] / a["seconds"] for a, b in zip(ours.get("runs", []), theirs.get("runs", []))
             if a["rc"] == 0 and b["rc"] == 0 and a["seconds"] > 0]
    return statistics.median(pairs) if pairs else None


def growth(guests: list[dict]) -> dict | None:
    """Goal 2: kexecfw's time at the largest guest against the smallest, bounded by GROWTH_SLACK times
    the ratio of their RAM (8.5x from 1 to 8 GiB); per phase too, so the one that grows shows."""
    timed = sorted((g for g in guests if "seconds" in g["tools"].get("kexecfw", {})), key=lambda g: g["mem_mib"])
    if len(timed) < 2 or timed[0]["mem_mib"] == timed[-1]["mem_mib"]:
        return None
    small, big = timed[0], timed[-1]
    a, b = small["tools"]["kexecfw"], big["tools"]["kexecfw"]
    bound = GROWTH_SLACK * big["mem_mib"] / small["mem_mib"]
    ratio = b["seconds"] / a["seconds"]
    phases = {name: (b["phases"].get(name, 0.0) / a["phases"][name] if a["phases"][name] > 0 else None)
              for name in a["phases"]}
    # the two guests boot at different times of a shared machine: makedumpfile's growth over the same
    # guests says how much of kexecfw's is the machine's load
    references = {ref: big["tools"][ref]["seconds"] / small["tools"][ref]["seconds"] for ref in REFERENCES
                  if "seconds" in small["tools"].get(ref, {}) and "seconds" in big["tools"].get(ref, {})}
    return {"from_mib": small["mem_mib"], "to_mib": big["mem_mib"], "ratio": ratio, "bound": bound,
            "met": ratio <= bound, "phase_ratios": phases, "reference_ratios": references}


def summarise(guests: list[dict], machine: str) -> dict:
    guests = sorted(guests, key=lambda g: g["mem_mib"] or 0)
    return {"schema": 1, "benchmark": "capture-kernel dump, -d 31, one CPU", "machine": machine,
            "guests": guests, "growth": growth(guests)}


def _gib(mib: int) -> str:
    return f"{mib / 1024:g} GiB"


def _time(tool: dict) -> str:
    return f"{tool['seconds']:.1f} s" if "seconds" in tool else ("failed" if tool.get("failed") else "not run")


def markdown(result: dict) -> str:
    """The result as Markdown: times and ratios, sizes and peak RSS, kexecfw's phases, the growth check."""
    guests = result["guests"]
    lines = [f"{result['benchmark']}; {result['machine']}; medians of {guests[0]['rounds'] if guests else 0} "
             "alternating rounds; ratio = makedumpfile's time / kexecfw's (> 1: kexecfw is faster), of the "
             "medians (in brackets: the median of each round's ratio).", "",
             "| guest RAM (vmcore) | filled | kexecfw save | makedumpfile -c | ratio | makedumpfile -l | ratio |",
             "|---|---|---|---|---|---|---|"]
    for g in guests:
        t = g["tools"]
        ours = t.get("kexecfw", {})
        cells = [_time(ours)]
        for ref in REFERENCES:
            theirs = t.get(ref, {})
            paired = paired_ratio(ours, theirs)
            ratio = (f"{theirs['seconds'] / ours['seconds']:.2f} ({paired:.2f})"
                     if "seconds" in theirs and "seconds" in ours and paired is not None else "-")
            cells += [_time(theirs), ratio]
        lines.append(f"| {_gib(g['mem_mib'])} ({(g['vmcore_bytes'] or 0) / MIB:.0f} MiB) | {g['filled_mib']} MiB | "
                     + " | ".join(cells) + " |")
    lines += ["", "| guest RAM | output kexecfw / -c / -l | peak RSS kexecfw / -c / -l |", "|---|---|---|"]
    for g in guests:
        t = [g["tools"].get(s, {}) for s, _ in TOOLS]
        out = " / ".join(f"{x['output_bytes'] / MIB:.1f}" if "output_bytes" in x else "-" for x in t)
        rss = " / ".join(f"{x['max_rss_mib']:.1f}" if "max_rss_mib" in x else "-" for x in t)
        lines.append(f"| {_gib(g['mem_mib'])} | {out} MiB | {rss} MiB |")
    phased = [g for g in guests if "phases" in g["tools"].get("kexecfw", {})]
    if phased:
        names = list(dict.fromkeys(n for g in phased for n in g["tools"]["kexecfw"]["phases"]))
        engine = next((g["tools"]["kexecfw"].get("engine") for g in phased if g["tools"]["kexecfw"].get("engine")),
                      None)
        lines += ["", "kexecfw save by phase (medians, seconds)" + (f"; engine: {engine}" if engine else "") + ":",
                  "", "| guest RAM | " + " | ".join(names) + " | total |", "|---" * (len(names) + 2) + "|"]
        for g in phased:
            k = g["tools"]["kexecfw"]
            lines.append(f"| {_gib(g['mem_mib'])} | " + " | ".join(f"{k['phases'].get(n, 0.0):.2f}" for n in names)
                         + f" | {k['seconds']:.2f} |")
        gr = result.get("growth")
        if gr:
            lines.append(f"| {_gib(gr['to_mib'])} / {_gib(gr['from_mib'])} | "
                         + " | ".join("-" if gr["phase_ratios"].get(n) is None else f"{gr['phase_ratios'][n]:.1f}x"
                                      for n in names) + f" | {gr['ratio']:.1f}x |")
    gr = result.get("growth")
    if gr:
        lines += ["", f"Growth (issue 14, goal 2): kexecfw at {_gib(gr['to_mib'])} takes {gr['ratio']:.2f}x its "
                      f"{_gib(gr['from_mib'])} time (bound {gr['bound']:.2f}x): "
                      f"{'met' if gr['met'] else 'MISSED'}"
                      + "".join(f"; {dict(TOOLS)[ref]} {r:.2f}x" for ref, r in gr.get("reference_ratios", {}).items())
                      + "."]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Dump time against guest RAM for each tool (median, with the rounds' range), and kexecfw's
    smallest-guest time scaled linearly, as a PNG."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    guests = [g for g in result["guests"] if g.get("mem_mib")]
    styles = {"kexecfw": ("#08519c", "o"), "makedumpfile-c": ("#de2d26", "s"), "makedumpfile-l": ("#fd8d3c", "^")}
    for suffix, label in TOOLS:
        pts = [(g["mem_mib"] / 1024, g["tools"][suffix]) for g in guests if "seconds" in g["tools"].get(suffix, {})]
        if not pts:
            continue
        xs = [x for x, _ in pts]
        ys = [t["seconds"] for _, t in pts]
        ok = [[r["seconds"] for r in t["runs"] if r["rc"] == 0] for _, t in pts]
        err = [[y - min(s) for y, s in zip(ys, ok)], [max(s) - y for y, s in zip(ys, ok)]]
        colour, marker = styles[suffix]
        name = f"{label} (zlib)" if suffix == "kexecfw" else label
        ax.errorbar(xs, ys, yerr=err, color=colour, marker=marker, capsize=3, label=name)
    timed = [g for g in guests if "seconds" in g["tools"].get("kexecfw", {})]
    if len(timed) >= 2:
        base = timed[0]
        xs = [g["mem_mib"] / 1024 for g in timed]
        scale = base["tools"]["kexecfw"]["seconds"] / (base["mem_mib"] / 1024)
        ax.plot(xs, [x * scale for x in xs], ":", color="#636363", label="kexecfw, linear from the smallest guest")
    ax.set_xlabel("guest RAM (GiB), filled before the crash")
    ax.set_ylabel("dump time in the capture kernel (s)")
    ax.set_title("-d 31 on one CPU (TCG), medians", fontsize=10)
    ax.set_xticks(sorted({g["mem_mib"] / 1024 for g in guests}))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def write_outputs(result: dict, json_out: Path, plot_out: Path | None) -> str:
    """The JSON result, its Markdown (next to it, .md) and the plot; returns the Markdown."""
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    json_out.with_suffix(".md").write_text(text + "\n")
    if plot_out is not None:
        plot(result, plot_out)
    return text


def size_mib(size: str) -> int:
    """A --sizes entry (8G, 1536M, 1024) in MiB, as `lab run --memory` reads it."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    from kexecfw.cli.lab import _mib
    return _mib(size)


def bench(py: str, sizes: list[str], rounds: int, lab_dirs: list[Path], lab_root: Path, timeout: int,
          machine: str) -> dict:
    """Boot one filled guest per size (smallest first), then read them and earlier ``lab_dirs``."""
    guests = [read_guest(d) for d in lab_dirs]
    lab_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    done: list[tuple[int, float]] = []
    for size in sorted(sizes, key=size_mib):
        mib = size_mib(size)
        if done:      # the guest's fill and every dump grow with RAM: a linear estimate from the last one
            last_mib, last_s = done[-1]
            print(f"# {size}: estimated {last_s * mib / last_mib / 60:.0f} min (linear from {last_mib} MiB)",
                  flush=True)
        keep = lab_root / f"capture-{size}-{stamp}"
        seconds = boot(py, size, rounds, keep, timeout)
        done.append((mib, seconds))
        if (keep / "result.json").is_file():
            guests.append(read_guest(keep, seconds))
    return summarise(guests, machine)
