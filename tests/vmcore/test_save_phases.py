"""vmcore save --json: time and pages per phase (kexecfw/vmcore/phases.py), and a pool sized by the CPUs the
process may run on."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kexecfw.vmcore import open_dump
from kexecfw.vmcore.phases import ORDER, PhaseTimes, mark, process_age
from kexecfw.vmcore.writer import DumpWriter


def save_json(src, out, *args: str, cpus: set[int] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(src), str(out), "--json",
                           *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("args", [(), ("--threads", "2"), ("-d", "0"), ("--elf",)])
def test_phases_cover_the_save_and_count_its_pages(args, mini_vmcores, tmp_path):
    report = save_json(mini_vmcores["x86_64"], tmp_path / "out", *args)
    phases = {p["name"]: p for p in report["phases"]}
    assert list(phases) == [n for n in ORDER if n in phases]                   # in the order of a save
    assert {"open", "summary", "classify", "read", "write", "other"} <= set(phases)
    # the process's start-up before the save: more than nothing (an interpreter started), less than it all
    assert 0 <= report["started_after_seconds"] < 60
    for p in report["phases"]:
        assert p["seconds"] >= 0 and p["cpu_seconds"] >= 0 and p["pages"] >= 0
    # the writer's phases add up to its own time (summary comes before it)
    writer_seconds = sum(p["seconds"] for name, p in phases.items() if name not in ("open", "summary"))
    assert writer_seconds == pytest.approx(report["seconds"], abs=0.005)
    assert phases["classify"]["pages"] == report.get("pages_present", phases["classify"]["pages"]) > 100
    assert phases["read"]["pages"] >= report["pages_written"]
    if "--elf" in args:
        assert "compress" not in phases
        return
    assert phases["write"]["pages"] == report["pages_written"]
    assert 0 < phases["compress"]["pages"] <= phases["read"]["pages"]         # zero pages are not compressed
    with open_dump(str(tmp_path / "out")) as k:
        assert sum(k.has_page(pfn) for pfn in range(k.max_pfn())) == report["pages_written"]
    if "--threads" in args:
        assert report["threads"] == 2 and phases["compress"]["thread_seconds"] >= 0


def test_one_usable_cpu_compresses_inline(mini_vmcores, tmp_path):
    """taskset -c 0 (or a capture kernel's maxcpus=1): one thread, whatever the machine has."""
    report = save_json(mini_vmcores["arm64"], tmp_path / "out", cpus={0})
    assert report["threads"] == 1
    assert "thread_seconds" not in next(p for p in report["phases"] if p["name"] == "compress")


def test_the_writer_reports_phases_without_the_cli(mini_vmcores, tmp_path):
    with open_dump(str(mini_vmcores["x86_64"])) as dump:
        stats = DumpWriter(dump, 31, "zstd", threads=1).write(str(tmp_path / "z.kdump"))
    assert stats["engine"].startswith("zstandard ") and stats["engine"].endswith("level 3")
    assert [p["name"] for p in stats["phases"]] == ["classify", "read", "compress", "write", "sync", "other"]


def test_phase_times_add_up_and_other_takes_the_rest():
    times = PhaseTimes()
    start = mark()
    times.add("read", start, 3)
    times.add("read", start, 2)
    report = {p["name"]: p for p in times.report(start)}
    assert report["read"]["pages"] == 5 and list(report) == ["read", "other"]
    assert report["other"]["seconds"] >= 0 and report["read"]["seconds"] >= 0


def test_process_age_counts_from_the_process_start():
    """The kernel's start time of this process against the clock: this test runs well after pytest started,
    and a child's age starts near zero."""
    assert process_age() > 0.0
    done = subprocess.run([sys.executable, "-c", "from kexecfw.vmcore.phases import process_age; "
                           "print(process_age())"], capture_output=True, text=True, timeout=60, check=True)
    assert 0.0 <= float(done.stdout) < 30
