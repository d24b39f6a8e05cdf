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


# --- bench/run.py capture: the capture-kernel dump benchmark (bench/capture.py) -------------------------
# On recorded results: a real `lab run --fill-memory --dump-rounds` directory cut to what the bench reads
# (tests/data/bench-capture/lab-1G) and the committed result the docs show (docs/bench/capture.json).

import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402

capture = bench.capture_module()
LAB_1G = REPO / "tests" / "data" / "bench-capture" / "lab-1G"
RECORDED = REPO / "docs" / "bench" / "capture.json"


def test_capture_reads_a_lab_run_into_medians_peaks_and_phases() -> None:
    guest = capture.read_guest(LAB_1G)
    rounds = json.loads((LAB_1G / "result.json").read_text())["settings"]["dump_rounds"]
    assert guest["rounds"] == rounds and guest["mem_mib"] == 1024
    assert guest["vmcore_bytes"] == int((LAB_1G / "capture" / "vmcore-size").read_text())
    assert guest["cpus_online"] == "0"            # the capture kernel ran on one CPU
    for suffix, _ in capture.TOOLS:
        measures = [json.loads((LAB_1G / "capture" / "steps" / f"round-{i}-{suffix}.measure").read_text())
                    for i in range(rounds)]
        tool = guest["tools"][suffix]
        assert tool["seconds"] == statistics.median(m["seconds"] for m in measures)
        assert tool["max_rss_mib"] == max(m["max_rss_kib"] for m in measures) / 1024
        assert tool["failed"] == 0 and len(tool["runs"]) == rounds
    ours = guest["tools"]["kexecfw"]
    # every round's phases and the rest of its wall time add up to that round's wall time
    for run in ours["runs"]:
        report = json.loads((LAB_1G / "capture" / "steps" / f"round-{ours['runs'].index(run)}-kexecfw.out").read_text())
        assert run["phases"] == capture.report_phases(report) and run["phases"]
        assert sum(run["phases"].values()) <= run["seconds"]
    assert set(ours["phases"]) == set(ours["runs"][0]["phases"]) | {capture.STARTUP}
    first = json.loads((LAB_1G / "capture" / "steps" / "round-0-kexecfw.out").read_text())
    assert ours["engine"] == first.get("engine")      # the engine that ran, as the save reported it


def test_capture_phase_reports_in_either_shape_and_without_phases() -> None:
    as_dict = {"phases": {"classify": 1.5, "compress": 4.0}, "seconds": 6.0}
    as_list = {"phases": [{"name": "classify", "seconds": 1.5}, {"name": "compress", "seconds": 4.0}]}
    assert capture.report_phases(as_dict) == capture.report_phases(as_list) == {"classify": 1.5, "compress": 4.0}
    assert capture.report_phases({"seconds": 6.0}) == {"save (no phase split)": 6.0}
    assert capture.report_phases(capture.save_report("not json")) == {}
    runs = [{"seconds": 7.0, "phases": {"classify": 1.0, "compress": 5.0}},
            {"seconds": 9.0, "phases": {"classify": 2.0, "compress": 5.5}}]
    assert capture.median_phases(runs) == {"classify": 1.5, "compress": 5.25, capture.STARTUP: 1.25}
    # a report that says when the save began splits the rest into the start-up and the exit
    for run, began in zip(runs, (0.5, 0.75)):
        run["started_after"] = began
    assert capture.median_phases(runs) == {"classify": 1.5, "compress": 5.25, capture.STARTED: 0.625,
                                           capture.EXITED: 0.625}


def test_capture_growth_check_bounds_the_big_guest_by_its_ram() -> None:
    small = capture.read_guest(LAB_1G)
    big = copy.deepcopy(small)
    big["mem_mib"] = 8 * 1024
    k = big["tools"]["kexecfw"]
    bound_seconds = small["tools"]["kexecfw"]["seconds"] * 8.5
    k["seconds"] = bound_seconds * 0.99
    grown = capture.growth([big, small])
    assert grown["bound"] == 8.5 and grown["met"] and grown["from_mib"] == 1024
    k["seconds"] = bound_seconds * 1.01
    assert not capture.growth([small, big])["met"]
    assert capture.growth([small]) is None


def test_capture_markdown_of_the_recorded_result() -> None:
    result = json.loads(RECORDED.read_text())
    text = capture.markdown(result)
    for g in result["guests"]:
        t = g["tools"]
        ours, c, lzo = t["kexecfw"]["seconds"], t["makedumpfile-c"]["seconds"], t["makedumpfile-l"]["seconds"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {g['mem_mib'] / 1024:g} GiB ("))
        paired_c, paired_l = (statistics.median(b["seconds"] / a["seconds"]
                                                for a, b in zip(t["kexecfw"]["runs"], t[ref]["runs"]))
                              for ref in ("makedumpfile-c", "makedumpfile-l"))
        assert row.endswith(f"| {ours:.1f} s | {c:.1f} s | {c / ours:.2f} ({paired_c:.2f}) | {lzo:.1f} s | "
                            f"{lzo / ours:.2f} ({paired_l:.2f}) |")
        phase_row = [line for line in text.splitlines() if line.startswith(f"| {g['mem_mib'] / 1024:g} GiB |")][-1]
        assert phase_row.endswith(f"| {ours:.2f} |")       # the phase table's total is the median wall time
    gr = result["growth"]
    assert gr["ratio"] == (result["guests"][-1]["tools"]["kexecfw"]["seconds"]
                           / result["guests"][0]["tools"]["kexecfw"]["seconds"])
    assert f"takes {gr['ratio']:.2f}x its 1 GiB time (bound 8.50x): {'met' if gr['met'] else 'MISSED'}" in text
    for ref, label in (("makedumpfile-c", "makedumpfile -c"), ("makedumpfile-l", "makedumpfile -l")):
        grown = result["guests"][-1]["tools"][ref]["seconds"] / result["guests"][0]["tools"][ref]["seconds"]
        assert f"{label} {grown:.2f}x" in text


def test_capture_redraws_a_recorded_result_without_qemu(tmp_path) -> None:
    out, png = tmp_path / "capture.json", tmp_path / "capture.png"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "capture", "--from-json", str(RECORDED),
                           "--json-out", str(out), "--plot", str(png)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == json.loads(RECORDED.read_text())
    assert out.with_suffix(".md").read_text().strip() in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 100_000


def test_capture_plot_is_in_the_docs() -> None:
    committed = REPO / "docs" / "images" / "capture-dump-time.png"
    assert committed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and committed.stat().st_size < 100_000
    assert "images/capture-dump-time.png" in (REPO / "docs" / "benchmarks.md").read_text()


def test_capture_reads_the_steps_the_lab_runs() -> None:
    # the capture kernel's round steps (kexecfw/lab/guest/init dump_rounds) are the names the bench reads
    init = (REPO / "kexecfw" / "lab" / "guest" / "init").read_text()
    for suffix, _ in capture.TOOLS:
        assert f"measured round-$i-{suffix} " in init
