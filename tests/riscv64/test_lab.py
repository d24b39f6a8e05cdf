"""The whole kdump cycle on Debian 13's riscv64 kernel in QEMU (TCG): kexecfw load -p in the guest,
sysrq crash, the capture kernel boots with our DTB and elfcorehdr, kexecfw and makedumpfile read
/proc/vmcore; and the exec scenario. About 2-4 minutes of QEMU each on 2 host cores (docs/lab.md)."""
from __future__ import annotations

import json

import pytest

from kexecfw.lab.shared import run_once
from tests.labruns import shared_lab_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    # the boot test_lab_vs_kexec_tools.py shares (with kexec-tools' `kexec -p -d` recorded first)
    return shared_lab_run("riscv64", generation="6.12")


def test_cycle(result):
    required = [p.name for p in result.phases if p.required and not p.ok]
    assert result.ok and not required, result.summary()
    for name in ("kexecfw vmcore info", "kexecfw vmcore notes", "kexecfw vmcore dmesg", "kexecfw vmcore save",
                 "makedumpfile -c", "makedumpfile reads kexecfw's saved dump", "vmcore-dmesg (kexec-tools)"):
        assert result.phase(name).ok, (name, result.phase(name).detail)


def test_capture_saw_our_headers(result):
    header, notes = result.vmcore_headers()
    assert header.machine == 243
    assert sum(n.name == b"CORE" for n in notes) == 2 and any(n.name == b"VMCOREINFO" for n in notes)
    cpus = json.loads(result.read_text("capture/kexecfw-notes.json"))["cpus"]
    assert [c["cpu"] for c in cpus] == [0, 1] and sum(c["panic"] for c in cpus) == 1
    dmesg = json.loads(result.read_text("capture/kexecfw-dmesg.json"))
    assert any("sysrq triggered crash" in r["text"] for r in dmesg["records"])


def test_exec_boots_the_second_kernel():
    """A normal kexec_load: riscv_kexec_relocate copies the segments and enters the kernel with the DTB
    in a1 (about 2 minutes of QEMU)."""
    result = run_once("riscv64", "exec", "kexecfw", kernel_generation="6.12", timeout=900, silence=300)
    assert result.ok, result.summary()
    assert result.phase("marker on the second kernel's console").ok
