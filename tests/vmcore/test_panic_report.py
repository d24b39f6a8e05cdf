"""The crash up front: the panic line, the panicking CPU and task, and what led to it, from the log
(kexecfw.vmcore.prstatus.panic_report), in `vmcore info` (+ --json) and in the lab's summary."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kexecfw.lab.result import LabResult
from kexecfw.vmcore.prstatus import panic_from_log, panic_report

ARCHES = ("arm64", "x86_64")       # the real guests of tests/data (tests/vmcore/conftest.py)

# an oops with panic_on_oops, as x86_64 prints it (arch/x86/kernel/dumpstack.c, mm/fault.c)
OOPS_LOG = b"""[    1.000000] systemd[1]: Started Journal Service.
[    2.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000
[    2.000001] #PF: supervisor write access in kernel mode
[    2.000002] #PF: error_code(0x0002) - not-present page
[    2.000003] PGD 0 P4D 0
[    2.000004] Oops: 0002 [#1] PREEMPT SMP NOPTI
[    2.000005] CPU: 1 PID: 345 Comm: bash Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[    2.000006] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)
[    2.000007] RIP: 0010:sysrq_handle_crash+0x16/0x20
[    2.000008] RAX: 0000000000000000 RBX: 0000000000000063 RCX: 0000000000000000
[    2.000009] Call Trace:
[    2.000010]  <TASK>
[    2.000011] ---[ end trace 0000000000000000 ]---
[    2.000012] Kernel panic - not syncing: Fatal exception
[    2.000013] Kernel Offset: disabled
"""


@pytest.mark.parametrize("arch", ARCHES)
def test_sysrq_crash_of_the_real_guests(arch, expected_dmesg):
    report = panic_report(expected_dmesg[arch])
    assert report.line == "Kernel panic - not syncing: sysrq triggered crash"
    assert (report.cpu, report.pid, report.comm) == (2, 1, "init")
    assert len(report.lead) == 1 and report.lead[0].endswith("] sysrq: Trigger a crash")
    assert panic_from_log(expected_dmesg[arch]) == (2, 1, "init")


def test_oops_then_panic_names_the_bug_and_its_task():
    report = panic_report(OOPS_LOG)
    assert report.line == "Kernel panic - not syncing: Fatal exception"
    # panic() prints no dump_stack() after an oops: the task is the one after the cause
    assert (report.cpu, report.pid, report.comm) == (1, 345, "bash")
    assert [ln.split("] ", 1)[1] for ln in report.lead] == [
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "#PF: supervisor write access in kernel mode", "#PF: error_code(0x0002) - not-present page",
        "PGD 0 P4D 0"]


def test_oops_without_panic_line_is_the_crash():
    # with kdump loaded, oops_end() goes to crash_kexec() before any panic line
    cut = OOPS_LOG[:OOPS_LOG.index(b"[    2.000006]")]
    report = panic_report(cut)
    assert report.line == "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    assert (report.cpu, report.pid, report.comm) == (1, 345, "bash")
    assert [ln.split("] ", 1)[1] for ln in report.lead] == [
        "#PF: supervisor write access in kernel mode", "#PF: error_code(0x0002) - not-present page",
        "PGD 0 P4D 0"]


def test_a_log_without_a_crash_has_no_report():
    assert panic_report(b"[    0.000000] Linux version 6.1.0\n[    1.000000] random: crng init done\n") is None
    assert panic_from_log(b"") is None


@pytest.mark.parametrize("arch", ARCHES)
def test_vmcore_info_shows_the_panic_first(arch, mini_vmcores):
    run = lambda *a: subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "info", *a, str(mini_vmcores[arch])],
                                    capture_output=True, check=True, text=True).stdout
    doc = json.loads(run("--json"))
    assert doc["panic"]["line"] == "Kernel panic - not syncing: sysrq triggered crash"
    assert (doc["panic"]["cpu"], doc["panic"]["pid"], doc["panic"]["comm"]) == (2, 1, "init")
    assert doc["panic"]["lead"][0].endswith("sysrq: Trigger a crash")
    text = run().splitlines()
    assert text[0] == "panic:       Kernel panic - not syncing: sysrq triggered crash"
    assert text[1] == "task:        CPU 2, PID 1 (init)"
    assert text[2].startswith("led by:      [") and text[2].endswith("sysrq: Trigger a crash")


@pytest.mark.parametrize("arch", ARCHES)
def test_lab_summary_says_why_the_kernel_died(arch, expected_dmesg, tmp_path):
    (tmp_path / "capture").mkdir()
    (tmp_path / "capture" / "vmcore-dmesg.txt").write_bytes(expected_dmesg[arch])
    result = LabResult(directory=tmp_path, arch=arch, scenario="panic", loader="kexecfw", generation="6.1",
                       kernel_release="6.1.0-56", ok=True)
    summary = result.summary().splitlines()
    at = summary.index("  crash: Kernel panic - not syncing: sysrq triggered crash")
    assert summary[at + 1] == "    on CPU 2, PID 1 (init)"
    assert summary[at + 2].startswith("    after: [") and summary[at + 2].endswith("sysrq: Trigger a crash")
    assert summary[at + 3] == f"    (whole log: {tmp_path / 'capture' / 'vmcore-dmesg.txt'})"
    # the register dump at the log's end is not the summary any more
    assert not any("RAX:" in ln or "R13:" in ln for ln in summary)
