#!/usr/bin/env python3
"""Side-by-side benchmarks of kexecfw against the tools it replaces.

Each benchmark runs kexecfw and the reference on the same input, alternating, N times, and prints
medians, the ratio (reference time / kexecfw time: > 1 means kexecfw is faster), output sizes and
peak RSS. Timings are wall-clock of whole processes, so start-up counts, as it does in a capture kernel.

kexecfw runs from a regular (non-editable) install in bench/.venv-bench, made on first use: an
editable install adds tens of milliseconds of import-hook start-up that no user has.

    python3 bench/run.py dmesg --vmcore FILE     # vs vmcore-dmesg (kexec-tools)
    python3 bench/run.py dump --vmcore FILE      # save -d 31 per codec vs makedumpfile -d 31 -c / -l / -z
    python3 bench/run.py plan  --sysroot DIR --kernel K [--initrd I]   # cold dry-run vs `python -c pass`
    python3 bench/run.py load --arch arm64       # in a lab guest: kexecfw load -p vs kexec -p, N rounds
    python3 bench/run.py dump-rss [--sizes 1G,8G] [--lab-dir DIR ...]
                                                 # in the capture kernel of filled lab guests: save -d 31
                                                 # (zlib, zstd) vs makedumpfile -d 31 -c, peak RSS per size
    .venv/bin/python bench/run.py capture [--sizes 1G,8G] [--rounds 5] [--lab-root DIR]
                                                 # in the capture kernel (one CPU) of filled lab guests:
                                                 # save -d 31 (default codec) vs makedumpfile -c / -l,
                                                 # alternating rounds; JSON, Markdown and a plot
                                                 # (matplotlib: the project venv's), see bench/capture.py
    python3 bench/run.py all                     # every benchmark whose inputs are found
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_VENV = REPO / "bench" / ".venv-bench"


@dataclass
class Sample:
    seconds: float
    max_rss_kib: int


GNU_TIME = "/usr/bin/time"   # Debian package "time"


def run_once(cmd: list[str], stdout_path: Path | None = None) -> Sample:
    """Wall time and peak RSS of one child process.

    Peak RSS comes from GNU time (a small C parent): a child forked or vfork'ed from this Python
    process would report this process's RSS as its own high-water mark. PYTHONSAFEPATH keeps
    `python -m kexecfw` off the source tree.
    """
    if not os.path.exists(GNU_TIME):
        raise SystemExit("bench: /usr/bin/time not found: apt-get install time")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        argv = [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd]
        out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
        try:
            start = time.perf_counter()
            code = subprocess.call(argv, stdout=out, stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, PYTHONSAFEPATH="1"))
            elapsed = time.perf_counter() - start
        finally:
            if stdout_path:
                out.close()
        if code != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed with status {code}")
        return Sample(elapsed, int(rss.read().split()[-1]))


def compare(name: str, ours: list[str], reference: list[str], runs: int, ref_label: str) -> dict:
    """Alternate the two commands ``runs`` times; report medians and the ratio."""
    a: list[Sample] = []
    b: list[Sample] = []
    run_once(ours), run_once(reference)  # warm the page cache for both
    for _ in range(runs):
        a.append(run_once(ours))
        b.append(run_once(reference))
    ta = statistics.median(s.seconds for s in a)
    tb = statistics.median(s.seconds for s in b)
    row = {"benchmark": name, "reference": ref_label, "kexecfw_s": ta, "reference_s": tb, "ratio": tb / ta,
           "kexecfw_rss_mib": max(s.max_rss_kib for s in a) / 1024,
           "reference_rss_mib": max(s.max_rss_kib for s in b) / 1024}
    print(f"{name:<28} kexecfw {ta * 1000:8.1f} ms  {ref_label} {tb * 1000:8.1f} ms  "
          f"ratio {row['ratio']:5.2f}  peak RSS {row['kexecfw_rss_mib']:.0f} / {row['reference_rss_mib']:.0f} MiB")
    return row


SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's: the interpreter a Debian capture kernel runs


def bench_python(base: str) -> str:
    """A venv of the interpreter ``base`` with kexecfw installed normally (not editable)."""
    py = BENCH_VENV / "bin" / "python"
    cfg = BENCH_VENV / "pyvenv.cfg"
    made_by = next((line.split("=", 1)[1].strip() for line in cfg.read_text().splitlines()
                    if line.startswith("executable")), None) if cfg.exists() else None
    if py.exists() and made_by != os.path.realpath(base):
        shutil.rmtree(BENCH_VENV)       # made from another interpreter: start-up would differ
    if not py.exists():
        subprocess.run([base, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", str(REPO)], check=True)
    else:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(REPO)],
                       check=True)
    return str(py)


def lab_kernel(py: str) -> Path | None:
    """The lab's Debian 6.1 x86_64 kernel (kexecfw.lab.kernels, run by the bench venv's kexecfw), if it can be had."""
    code = "from kexecfw.lab.kernels import debian_kernel; print(debian_kernel('x86_64', '6.1'))"
    found = subprocess.run([py, "-c", code], capture_output=True, text=True)
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def fixture_vmcore() -> Path | None:
    """The x86_64 fixture's mini vmcore, decompressed, when the shared fixtures are present."""
    src = REPO / "tests" / "data" / "debian12-guests" / "x86_64" / "capture" / "vmcore-mini.elf.xz"
    if not src.exists():
        return None
    dst = Path(tempfile.gettempdir()) / "kexecfw-bench-x86_64-mini.elf"
    if not dst.exists():
        dst.write_bytes(lzma.decompress(src.read_bytes()))
    return dst


def bench_dmesg(py: str, vmcore: Path, runs: int) -> list[dict]:
    """`kexecfw vmcore dmesg` (the installed command: a plain script, see bin/kexecfw) against
    vmcore-dmesg and against the interpreter's own start-up; `python -m kexecfw` for comparison."""
    tool = shutil.which("vmcore-dmesg")
    if tool is None:
        raise SystemExit("bench: vmcore-dmesg not found: apt-get install kexec-tools")
    command = [str(Path(py).parent / "kexecfw"), "vmcore", "dmesg", str(vmcore)]
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours.txt", Path(tmp) / "theirs.txt"
        run_once(command, ours)
        run_once([tool, str(vmcore)], theirs)
        identical = ours.read_bytes() == theirs.read_bytes()
    print(f"dmesg output byte-identical to vmcore-dmesg: {identical}")
    rows = [compare("vmcore dmesg", command, [tool, str(vmcore)], runs, "vmcore-dmesg"),
            compare("vmcore dmesg vs bare python", command, [py, "-c", "pass"], runs, "python -c pass"),
            compare("python -m kexecfw: dmesg vs bare python", [py, "-m", "kexecfw", *command[1:]],
                    [py, "-c", "pass"], runs, "python -c pass")]
    rows[0]["identical"] = identical
    return rows


def bench_dump(py: str, vmcore: Path, runs: int) -> list[dict]:
    """kexecfw save -d 31 per codec against makedumpfile's codecs (Debian 12's 1.7.2: zlib and lzo)."""
    tool = shutil.which("makedumpfile")
    if tool is None:
        raise SystemExit("bench: makedumpfile not found: apt-get install makedumpfile")
    rows = []
    with tempfile.TemporaryDirectory(dir=vmcore.parent) as tmp:
        ours_zstd, ours_zlib = Path(tmp) / "ours-zstd.kdump", Path(tmp) / "ours-zlib.kdump"
        ref_zlib, ref_lzo = Path(tmp) / "ref-zlib.kdump", Path(tmp) / "ref-lzo.kdump"

        def ours(codec: str, out: Path) -> list[str]:
            return ["sh", "-c", f'rm -f "{out}"; exec "{py}" -m kexecfw vmcore save -d 31 -c {codec} '
                                f'--progress never -i "{vmcore}" "{out}"']

        def ref(flag: str, out: Path) -> list[str]:
            return ["sh", "-c", f'rm -f "{out}"; exec "{tool}" -d 31 {flag} "{vmcore}" "{out}"']

        for label, a, b, a_out, b_out in (
                ("save -d 31 zstd vs -c", ours("zstd", ours_zstd), ref("-c", ref_zlib), ours_zstd, ref_zlib),
                ("save -d 31 zlib vs -c", ours("zlib", ours_zlib), ref("-c", ref_zlib), ours_zlib, ref_zlib),
                ("save -d 31 zstd vs -l", ours("zstd", ours_zstd), ref("-l", ref_lzo), ours_zstd, ref_lzo)):
            row = compare(label, a, b, runs, "makedumpfile")
            row["kexecfw_bytes"], row["reference_bytes"] = a_out.stat().st_size, b_out.stat().st_size
            print(f"{'':<28} output {row['kexecfw_bytes'] / 2**20:.1f} MiB vs {row['reference_bytes'] / 2**20:.1f} MiB")
            rows.append(row)
    return rows


def bench_load(py: str, arch: str, runs: int) -> list[dict]:
    """In a QEMU lab guest (TCG): the same panic load by kexec-tools and kexecfw, alternating, with and
    without the sha256 check; times are the guest's own (uptime, 10 ms resolution)."""
    keep = Path(tempfile.mkdtemp(prefix="kexecfw-bench-")) / "lab"
    # kexec_load for both (kexec-tools 2.0.25 has no file-load default); --compare-kexec-tools brings
    # the kallsyms _text workaround kexec-tools needs on Debian's arm64 6.1 kernel.
    cmd = [py, "-m", "kexecfw", "lab", "run", "--arch", arch, "--compare-kexec-tools", "--bench-load", str(runs),
           "--keep", str(keep)] + (["--load-args=--classic"] if arch == "x86_64" else [])
    if subprocess.run(cmd, cwd="/", stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"bench: the lab run failed; see {keep}")
    steps = {}
    for line in (keep / "first" / "steps.txt").read_text().splitlines():
        name, rc, start, end = line.split()
        steps[name] = (int(rc), float(end) - float(start))
    rows = []
    for label, ours, theirs in (("load -p in the guest", "bench-kexecfw", "bench-kexec-tools"),
                                ("load -p, no sha256 check", "bench-kexecfw-nosha", "bench-kexec-tools-nosha")):
        a = [steps.get(f"{ours}-{i}") for i in range(runs)]
        b = [steps.get(f"{theirs}-{i}") for i in range(runs)]
        if None in a or None in b or any(rc for rc, _ in a + b):
            raise SystemExit(f"bench: a load failed in the guest; see {keep}/first/steps")
        ta, tb = statistics.median(t for _, t in a), statistics.median(t for _, t in b)
        row = {"benchmark": f"{label} ({arch}, TCG)", "reference": "kexec -p", "kexecfw_s": ta, "reference_s": tb,
               "ratio": tb / ta, "kexecfw_rss_mib": float("nan"), "reference_rss_mib": float("nan")}
        print(f"{row['benchmark']:<28} kexecfw {ta * 1000:8.0f} ms  kexec -p {tb * 1000:8.0f} ms  "
              f"ratio {row['ratio']:5.2f}")
        rows.append(row)
    python = [steps.get(f"bench-python-{i}") for i in range(runs)]
    if None not in python:
        t = statistics.median(t for _, t in python)
        print(f"{'python3 -c pass in the guest':<28} {t * 1000:8.0f} ms")
        rows.append({"benchmark": f"python3 -c pass in the guest ({arch}, TCG)", "kexecfw_s": t})
    importtime = keep / "first" / "steps" / "bench-kexecfw-importtime.err"
    if importtime.is_file():
        t = importtime_total(importtime.read_text()) / 1e6
        print(f"{'imports of load -p (importtime)':<28} {t * 1000:8.0f} ms")
        rows.append({"benchmark": f"imports of load -p, -X importtime ({arch}, TCG)", "kexecfw_s": t})
    return rows


def importtime_total(stderr: str) -> int:
    """Microseconds of all imports in ``python -X importtime`` output: the top-level cumulative times."""
    total = 0
    for line in stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            if not parts[2].startswith("  "):       # one space after "|": a top-level import
                total += int(parts[1])
    return total


def bench_dump_rss(py: str, sizes: list[str], lab_dirs: list[Path], timeout: int) -> list[dict]:
    """Peak RSS, wall time and output size of each dump tool in the capture kernel of x86_64 lab guests
    whose memory was filled before the crash (lab run --fill-memory), one guest per RAM size: RSS
    must stay flat as the vmcore grows. ``lab_dirs``: report earlier runs instead of booting."""
    dirs = list(lab_dirs)
    for size in sizes:
        keep = Path(tempfile.mkdtemp(prefix=f"kexecfw-bench-rss-{size}-")) / "lab"
        cmd = [py, "-m", "kexecfw", "lab", "run", "--arch", "x86_64", "--memory", size, "--fill-memory",
               "--timeout", str(timeout), "--keep", str(keep)]
        print(f"# lab run --memory {size} --fill-memory: {keep}", flush=True)
        if subprocess.run(cmd, cwd="/", stdout=subprocess.DEVNULL).returncode != 0:
            print(f"bench: the {size} lab run failed; see {keep}", file=sys.stderr)
        dirs.append(keep)
    tools = (("kexecfw-vmcore-save", "kexecfw zlib"), ("kexecfw-vmcore-save-zstd", "kexecfw zstd"),
             ("makedumpfile", "makedumpfile -c"))
    print(f"{'guest RAM':>9} {'vmcore':>9} {'filled':>15} | " + " | ".join(f"{label:<27}" for _, label in tools))
    print(f"{'':>9} {'':>9} {'anon+cache':>15} | " + " | ".join(f"{'RSS MiB  time s  out MiB':<27}" for _ in tools))
    rows = []
    for d in dirs:
        settings = json.loads((d / "result.json").read_text()).get("settings", {})
        size_file = d / "capture" / "vmcore-size"
        vmcore = int(size_file.read_text()) if size_file.is_file() else 0
        fill_file = d / "first" / "fill.json"
        fill = json.loads(fill_file.read_text()) if fill_file.is_file() else {}
        row: dict = {"benchmark": f"dump RSS, {settings.get('mem')} MiB guest", "directory": str(d),
                     "mem_mib": settings.get("mem"), "vmcore_bytes": vmcore, "fill": fill}
        cells = []
        for step, label in tools:
            m_file = d / "capture" / "steps" / f"{step}.measure"
            m = json.loads(m_file.read_text()) if m_file.is_file() else None
            row[label] = m
            if m is None or m.get("rc") != 0:
                cells.append(f"{'failed' if m else 'not run':<27}")
                continue
            out = m.get("output_bytes") or 0
            cells.append(f"{m['max_rss_kib'] / 1024:7.1f}  {m['seconds']:6.1f}  {out / 2**20:7.1f}   ")
        filled = f"{fill.get('anon_mib', 0)}+{fill.get('page_cache_mib', 0)} MiB" if fill else "-"
        print(f"{settings.get('mem', 0):>5} MiB {vmcore / 2**20:5.0f} MiB {filled:>15} | " + " | ".join(cells))
        rows.append(row)
    print("(in the capture kernel, under TCG: times are the guest's wall clock; peak RSS as GNU time's %M)")
    return rows


def bench_plan(py: str, sysroot: Path, kernel: Path, initrd: Path | None, runs: int) -> list[dict]:
    cmd = [py, "-m", "kexecfw", "--sysroot", str(sysroot), "load", "-p", "--dry-run", "--json", str(kernel),
           "--append", "console=ttyS0 maxcpus=1 reset_devices"]
    if initrd:
        cmd += ["--initrd", str(initrd)]
    return [compare("load -p --dry-run (cold)", cmd, [py, "-c", "pass"], runs, "python -c pass")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["dmesg", "dump", "dump-rss", "capture", "plan", "load", "all"])
    p.add_argument("--arch", default="x86_64", help="guest architecture for the load benchmark")
    p.add_argument("--vmcore", type=Path, help="ELF vmcore for dmesg (default: the x86_64 fixture's mini vmcore)")
    p.add_argument("--sysroot", type=Path, help="sysroot for plan (default: the x86_64 fixture's)")
    p.add_argument("--kernel", type=Path, help="kernel for plan (default: the lab cache's x86_64 kernel)")
    p.add_argument("--initrd", type=Path)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--sizes", default="1G,8G",
                   help="dump-rss, capture: guest RAM sizes to boot, filled (default 1G,8G)")
    p.add_argument("--lab-dir", type=Path, action="append", default=[],
                   help="dump-rss, capture: an earlier `lab run --fill-memory` (capture: with --dump-rounds) "
                        "results directory (repeatable; with --sizes '' nothing is booted)")
    p.add_argument("--timeout", type=int, default=3600, help="dump-rss, capture: seconds per lab run")
    p.add_argument("--rounds", type=int, default=5, help="capture: rounds of each dump tool per guest (default 5)")
    p.add_argument("--lab-root", type=Path, default=None,
                   help="capture: where the lab results directories go (default: a new temporary directory)")
    p.add_argument("--json-out", type=Path, default=REPO / "docs" / "bench" / "capture.json",
                   help="capture: the JSON result (its Markdown goes next to it as .md; default %(default)s)")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "images" / "capture-dump-time.png",
                   help="capture: the plot of dump time against guest RAM (default %(default)s)")
    p.add_argument("--from-json", type=Path, default=None,
                   help="capture: redraw the Markdown and the plot of a recorded result; nothing is run")
    p.add_argument("--markdown", action="store_true", help="also print the results as a Markdown table (README)")
    p.add_argument("--python", default=SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable,
                   help=f"interpreter for kexecfw and the bare-python baseline (default {SYSTEM_PYTHON}, "
                        "else this one)")
    args = p.parse_args(argv)
    if args.which == "capture":
        return bench_capture(args)
    py = bench_python(args.python)
    version = subprocess.run([py, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {version} ({args.python}), "
               f"{time.strftime('%Y-%m-%d')}")
    print(f"# {machine}")
    rows: list[dict] = []
    if args.which in ("dmesg", "all"):
        vmcore = args.vmcore or fixture_vmcore()
        if vmcore is None:
            raise SystemExit("bench: no vmcore: pass --vmcore FILE")
        rows += bench_dmesg(py, vmcore, args.runs)
    if args.which == "dump" or (args.which == "all" and args.vmcore):
        if args.vmcore is None:
            raise SystemExit("bench: dump needs --vmcore FILE (a full /proc/vmcore copy from the lab)")
        rows += bench_dump(py, args.vmcore, args.runs)
    if args.which in ("plan", "all"):
        sysroot = args.sysroot or REPO / "tests" / "data" / "debian12-guests" / "x86_64" / "sysroot"
        kernel = args.kernel or lab_kernel(py)
        if kernel is None or not sysroot.is_dir():
            raise SystemExit("bench: plan needs --sysroot DIR and --kernel FILE")
        rows += bench_plan(py, sysroot, kernel, args.initrd, args.runs)
    if args.which == "load":
        rows += bench_load(py, args.arch, args.runs)
    if args.which == "dump-rss":
        sizes = [s for s in args.sizes.split(",") if s] if args.sizes else []
        bench_dump_rss(py, sizes, args.lab_dir, args.timeout)
        return 0
    if args.markdown:
        print(markdown_table(rows, machine))
    return 0


def capture_module():
    """bench/capture.py, found by path (this script may run with PYTHONSAFEPATH, or be loaded by a test)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_capture", Path(__file__).with_name("capture.py"))
    module = sys.modules.setdefault("bench_capture", importlib.util.module_from_spec(spec))
    if not hasattr(module, "bench"):
        spec.loader.exec_module(module)
    return module


def bench_capture(args: argparse.Namespace) -> int:
    """The capture-kernel benchmark: boot the --sizes (the lab runs on the host's kexecfw: this
    interpreter's when it has one, else the bench venv's), read them and the --lab-dir results."""
    if args.from_json:
        return capture_outputs(json.loads(args.from_json.read_text()), args)
    sizes = [s for s in args.sizes.split(",") if s] if args.sizes else []
    py = sys.executable
    if sizes and subprocess.run([py, "-c", "import kexecfw.lab"], capture_output=True).returncode != 0:
        py = bench_python(args.python)
    lab_root = args.lab_root or Path(tempfile.mkdtemp(prefix="kexecfw-bench-capture-"))
    machine = f"host {platform.machine()}, {os.cpu_count()} CPUs, QEMU TCG, {time.strftime('%Y-%m-%d')}"
    return capture_outputs(capture_module().bench(py, sizes, args.rounds, args.lab_dir, lab_root, args.timeout,
                                                  machine), args)


def capture_outputs(result: dict, args: argparse.Namespace) -> int:
    """Write the capture benchmark's JSON, Markdown and plot; print the Markdown."""
    print(capture_module().write_outputs(result, args.json_out, args.plot))
    print(f"# wrote {args.json_out}, {args.json_out.with_suffix('.md')} and {args.plot}")
    return 0


def markdown_table(rows: list[dict], machine: str) -> str:
    lines = [f"Host: {machine}; medians of alternating runs; ratio = reference time / kexecfw time.", "",
             "| benchmark | kexecfw | reference | ratio | peak RSS kexecfw / reference | output kexecfw / reference |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "reference" not in r:        # a measurement for context (in-guest python start-up, imports)
            lines.append(f"| {r['benchmark']} | {r['kexecfw_s'] * 1000:.0f} ms |  |  |  |  |")
            continue
        out = (f"{r['kexecfw_bytes'] / 2**20:.1f} / {r['reference_bytes'] / 2**20:.1f} MiB"
               if "kexecfw_bytes" in r else ("identical" if r.get("identical") else ""))
        rss = ("-" if r["kexecfw_rss_mib"] != r["kexecfw_rss_mib"]  # NaN: not measured (in-guest runs)
               else f"{r['kexecfw_rss_mib']:.0f} / {r['reference_rss_mib']:.0f} MiB")
        lines.append(f"| {r['benchmark']} | {r['kexecfw_s'] * 1000:.0f} ms | {r['reference']} "
                     f"{r['reference_s'] * 1000:.0f} ms | {r['ratio']:.2f} | {rss} | {out} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
