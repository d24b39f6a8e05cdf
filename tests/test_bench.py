"""bench/run.py's own arithmetic (the benchmarks themselves run by hand: timing is not a test)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
bench = sys.modules["bench_run"] = importlib.util.module_from_spec(spec)   # its dataclass looks itself up
spec.loader.exec_module(bench)


def test_importtime_total_counts_each_top_level_import_once() -> None:
    # -X importtime's lines: self | cumulative | name, nested imports indented under their importer
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |     _struct",
        "import time:        50 |        150 |   struct",
        "import time:       200 |        350 | kexecfw.elfnotes",
        "import time:        30 |         30 | gc",
        "Traceback line that is not importtime output",
    ])
    assert bench.importtime_total(stderr) == 380


def test_importtime_total_of_a_real_interpreter() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json"], capture_output=True,
                         text=True, check=True).stderr
    total = bench.importtime_total(out)
    json_line = next(line for line in out.splitlines() if line.rstrip().endswith("| json"))
    assert total >= int(json_line.split("|")[1]) > 0


def test_markdown_table_has_comparisons_and_context_rows() -> None:
    rows = [{"benchmark": "vmcore dmesg", "kexecfw_s": 0.013, "reference": "vmcore-dmesg", "reference_s": 0.002,
             "ratio": 0.154, "kexecfw_rss_mib": 10.2, "reference_rss_mib": 2.0, "identical": True},
            {"benchmark": "load -p (x86_64, TCG)", "kexecfw_s": 1.53, "reference": "kexec -p", "reference_s": 1.23,
             "ratio": 0.80, "kexecfw_rss_mib": float("nan"), "reference_rss_mib": float("nan")},
            {"benchmark": "python3 -c pass in the guest", "kexecfw_s": 0.11}]
    lines = bench.markdown_table(rows, "test host").splitlines()
    assert lines[4] == "| vmcore dmesg | 13 ms | vmcore-dmesg 2 ms | 0.15 | 10 / 2 MiB | identical |"
    assert lines[5] == "| load -p (x86_64, TCG) | 1530 ms | kexec -p 1230 ms | 0.80 | - |  |"
    assert lines[6] == "| python3 -c pass in the guest | 110 ms |  |  |  |  |"
