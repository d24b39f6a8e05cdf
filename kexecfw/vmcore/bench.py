"""Benchmark (not a test): kexecfw against makedumpfile and vmcore-dmesg on the same vmcore.

    python -m kexecfw.vmcore.bench VMCORE [--out DIR] [--repeat N] [--json]

Runs, each as a child process measured with wait4() (wall time, peak RSS from
ru_maxrss), and reports output sizes:

* ``kexecfw vmcore save -d 31 -c zlib`` / ``-c zstd`` / ``-c lzo`` (when python-lzo is there)
* ``makedumpfile -d 31 -c`` (zlib) and ``-z`` (zstd; Debian 12's 1.7.2 lacks it: reported as failed)
  and ``-l`` (lzo)
* ``kexecfw vmcore dmesg`` and kexec-tools' ``vmcore-dmesg``, and ``python3 -c pass`` as the floor

makedumpfile reads only dumps of its own architecture, and needs a vmcore with the
kernel's page tables (a real /proc/vmcore or a full ELF/kdump file).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def measure(argv: list[str], stdout_path: str | None = None) -> dict:
    """Run ``argv``; wall seconds, peak RSS (KiB), exit code."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        try:
            fd = os.open(stdout_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    return {"argv": argv, "seconds": round(time.perf_counter() - t0, 4), "max_rss_kib": usage.ru_maxrss,
            "rc": os.waitstatus_to_exitcode(status)}


def run(vmcore: str, out: str, repeat: int) -> list[dict]:
    py = sys.executable
    results = []

    def best(name: str, argv: list[str], output: str | None = None, stdout: str | None = None) -> None:
        runs = []
        for _ in range(repeat):
            if output and os.path.exists(output):
                os.unlink(output)
            runs.append(measure(argv, stdout))
        r = min(runs, key=lambda x: x["seconds"])
        r["name"] = name
        target = output or stdout
        if target and os.path.exists(target):
            r["output_bytes"] = os.path.getsize(target)
        results.append(r)
        size = f"{r.get('output_bytes', 0) / (1 << 20):9.2f} MiB" if "output_bytes" in r else " " * 13
        print(f"{name:<34} rc={r['rc']:<3} {r['seconds']:8.3f} s  {r['max_rss_kib'] / 1024:7.1f} MiB RSS  {size}",
              file=sys.stderr)

    best("python3 -c pass", [py, "-c", "pass"])
    codecs = ["zlib", "zstd"]
    try:
        import lzo  # noqa: F401
        codecs.append("lzo")
    except ImportError:
        pass
    for c in codecs:
        o = os.path.join(out, f"kexecfw-{c}.kdump")
        best(f"kexecfw save -d 31 -c {c}", [py, "-m", "kexecfw", "vmcore", "save", "-i", vmcore, "-d", "31",
                                            "-c", c, "--progress", "never", o], o)
    if shutil.which("makedumpfile"):
        for flag, c in (("-c", "zlib"), ("-z", "zstd"), ("-l", "lzo")):
            o = os.path.join(out, f"makedumpfile-{c}.kdump")
            best(f"makedumpfile -d 31 {flag}", ["makedumpfile", "-d", "31", flag, vmcore, o], o)
    best("kexecfw vmcore dmesg", [py, "-m", "kexecfw", "vmcore", "dmesg", vmcore], stdout=os.path.join(out, "k.txt"))
    if shutil.which("vmcore-dmesg"):
        best("vmcore-dmesg", ["vmcore-dmesg", vmcore], stdout=os.path.join(out, "v.txt"))
        if os.path.exists(os.path.join(out, "v.txt")):
            same = open(os.path.join(out, "k.txt"), "rb").read() == open(os.path.join(out, "v.txt"), "rb").read()
            print(f"dmesg identical to vmcore-dmesg: {same}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kexecfw.vmcore.bench", description=__doc__.split("\n")[0])
    p.add_argument("vmcore")
    p.add_argument("--out", help="directory for the outputs (default: a temporary one, removed)")
    p.add_argument("--repeat", type=int, default=1, help="runs per command, best time kept")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="kexecfw-bench-")
    os.makedirs(out, exist_ok=True)
    try:
        results = run(args.vmcore, out, max(1, args.repeat))
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    if args.json:
        print(json.dumps({"schema": 1, "vmcore": args.vmcore, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
