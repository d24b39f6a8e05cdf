"""In a real x86_64 guest (the QEMU lab): kexec_file_load, and our prediction of what the kernel builds.

The kernel does not say where it put its segments, but the capture kernel shows two of them: the
elfcorehdr= it was given, and (in "reserve setup_data") the RNG seed node inside the boot_params
segment. Both must be where the plan from `kexecfw load --file-load` said.
"""
from __future__ import annotations

import json
import re

import pytest

from kexecfw.plugins.x86_64.fileload import (EFI_SETUP_DATA_SIZE, MAX_ELFCOREHDR_STR_LEN, SETUP_DATA_SIZE)
from tests.labruns import lab_generations, shared_lab_run

pytestmark = pytest.mark.slow


# Debian 12's 6.1 and Debian 13's 6.12 (5-level paging under -cpu max); $KEXECFW_LAB_GENERATION picks one
@pytest.fixture(scope="module", params=lab_generations())
def result(request: pytest.FixtureRequest):
    # kexec_file_load is the x86_64 default where the running kernel has it (asserted below), so this
    # is the same boot as tests/lab's x86_64 panic run, shared.
    return shared_lab_run("x86_64", generation=request.param)


def _capture_console(result) -> str:
    console = result.path("console.log").read_text(errors="replace")
    at = console.find("lab.role=capture")
    assert at >= 0, "the capture kernel did not boot"
    return console[at:]


def test_capture_kernel_booted_from_kexec_file_load(result) -> None:
    plan = json.loads(result.path("plan/plan.json").read_text())
    assert plan["syscall"] == "kexec_file_load" and plan["flags"] == "0x2"
    assert "kexec_crash_loaded 1" in (result.read_text("first/kexec-state") or "")
    assert (result.vmcore_size() or 0) > 0


def test_kernel_placed_elfcorehdr_and_boot_params_where_predicted(result) -> None:
    plan = json.loads(result.path("plan/plan.json").read_text())
    segs = {s["name"]: int(s["mem"], 16) for s in plan["segments"]}
    cmdline = (result.read_text("capture/cmdline") or "").split()
    assert f"elfcorehdr={segs['elfcorehdr']:#x}" in cmdline
    # the RNG seed node: boot_params + the command line area + the EFI setup_data slot (bzImage64_load)
    cmdline_len = len(plan["cmdline"]) + 1
    offset = (4096 + cmdline_len + MAX_ELFCOREHDR_STR_LEN + 15) // 16 * 16 + SETUP_DATA_SIZE + EFI_SETUP_DATA_SIZE
    config = result.read_text(f"snapshot/boot/config-{result.kernel_release}") or ""
    if "CONFIG_IMA_KEXEC=y" in config:
        pytest.skip("IMA setup_data precedes the RNG seed on this kernel")
    nodes = [int(a, 16) for a, b in re.findall(r"reserve setup_data: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] usable",
                                               _capture_console(result)) if int(b, 16) - int(a, 16) == 0xF]
    assert segs["boot_params"] + offset in nodes, (hex(segs["boot_params"]), [hex(n) for n in nodes])
