"""The CLI as a user runs it: one-line errors, exit codes, JSON, and no plotting imports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fixture_path


def kexecfw(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexecfw", *args], capture_output=True, text=True, check=check,
                          timeout=120)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kexecfw: error: ")
    return lines[0]


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_memmap_json_on_real_sysroots(arch):
    root = fixture_path(arch, "sysroot")
    doc = json.loads(kexecfw("--sysroot", str(root), "memmap", "--json", check=True).stdout)
    assert doc["schema"] == 1 and doc["arch"] == arch  # arch detected from the snapshot's proc/kcore
    assert len(doc["crash_regions"]) == 1
    start, end = (int(x, 16) for x in doc["crash_regions"][0])
    assert end - start + 1 == 384 << 20


def test_status_exit_codes_like_kexec_S():
    root = fixture_path("x86_64", "sysroot")
    assert kexecfw("--sysroot", str(root), "status").returncode == 1   # nothing loaded in that snapshot
    doc = json.loads(kexecfw("--sysroot", str(root), "status", "--json").stdout)
    assert doc == {"schema": 1, "loaded": False, "crash_loaded": False, "crash_size": hex(384 << 20)}


def test_real_load_on_a_snapshot_is_refused(tmp_path):
    root = fixture_path("arm64", "sysroot")
    k = tmp_path / "Image"
    k.write_bytes(b"\0" * 4096)
    line = one_line_error(kexecfw("--sysroot", str(root), "load", "-p", str(k)))
    assert "--sysroot" in line and "--dry-run" in line


@pytest.mark.parametrize("action", [["exec"], ["unload", "-p"]])
def test_exec_and_unload_refuse_snapshots(action):
    root = fixture_path("arm64", "sysroot")
    line = one_line_error(kexecfw("--sysroot", str(root), *action))
    assert "snapshot" in line


def test_missing_kernel_file(tmp_path):
    root = fixture_path("arm64", "sysroot")
    line = one_line_error(kexecfw("--sysroot", str(root), "load", "--dry-run", str(tmp_path / "nope")))
    assert "does not exist" in line


def test_panic_load_without_crashkernel(tmp_path):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/iomem").write_text("40000000-7fffffff : System RAM\n")
    k = tmp_path / "k"
    k.write_bytes(b"\0" * 64)
    line = one_line_error(kexecfw("--sysroot", str(root), "--arch", "arm64", "load", "-p", "--dry-run", str(k)))
    assert "crashkernel=" in line


def test_unknown_arch(tmp_path):
    line = one_line_error(kexecfw("--arch", "vax", "memmap"))
    assert "vax" in line


def test_snapshot_of_a_snapshot_round_trips(tmp_path):
    root = fixture_path("x86_64", "sysroot")
    kexecfw("--sysroot", str(root), "snapshot", str(tmp_path / "copy"), check=True)
    a = json.loads(kexecfw("--sysroot", str(root), "memmap", "--json", check=True).stdout)
    b = json.loads(kexecfw("--sysroot", str(tmp_path / "copy"), "memmap", "--json", check=True).stdout)
    a.pop("source"), b.pop("source")
    assert a == b
    line = one_line_error(kexecfw("--sysroot", str(root), "snapshot", str(tmp_path / "copy")))
    assert "not empty" in line


def test_snapshot_keeps_what_kdump_status_reads(tmp_path):
    # kdump status on a snapshot asks whether the kernel updates the crash header on hotplug and which boot
    # loaded the panic kernel: a snapshot that dropped those files would report them absent
    import shutil
    src = tmp_path / "src"
    shutil.copytree(fixture_path("x86_64", "sysroot"), src)
    facts = {"sys/devices/system/cpu/crash_hotplug": "1\n", "sys/devices/system/memory/crash_hotplug": "0\n",
             "proc/sys/kernel/random/boot_id": "0f6e3c6a-3a51-4a8e-9d4b-0c3d1c2b7a90\n"}
    for rel, text in facts.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    kexecfw("--sysroot", str(src), "snapshot", str(tmp_path / "copy"), check=True)
    assert {rel: (tmp_path / "copy" / rel).read_text() for rel in facts} == facts


def test_cli_does_not_import_plotting_or_widgets():
    root = fixture_path("arm64", "sysroot")
    code = ("import sys; from kexecfw.cli import main; "
            f"main(['--sysroot', {str(root)!r}, 'memmap', '--json']); "
            "bad = [m for m in ('matplotlib', 'ipywidgets', 'elftools') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


def test_only_the_chosen_command_is_configured():
    from kexecfw.cli import build_parser, chosen_command
    assert chosen_command(["--sysroot", "/x", "--arch", "arm64", "vmcore", "dmesg"]) == "vmcore"
    assert chosen_command(["--help"]) is None and chosen_command(["load", "--help"]) == "load"
    full = build_parser()
    assert full.parse_args(["load", "-p", "K"]).panic and full.parse_args(["snapshot", "X"]).dest == "X"
    code = ("import sys; from kexecfw.cli import build_parser; build_parser(only='status'); "
            "assert 'kexecfw.cli.vmcore' not in sys.modules and 'kexecfw.cli.lab' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("args", [["memmap"], ["memmap", "--json"], ["crashkernel", "parse", "--ram", "4G", "256M"]])
def test_a_full_disk_for_the_output_is_one_line(args):
    """stdout on /dev/full (ENOSPC): a one-line error and the no-space exit code, never a traceback,
    whether the command's own print fails or only the flush at exit."""
    root = fixture_path("x86_64", "sysroot")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "kexecfw", "--sysroot", str(root), *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert one_line_error(proc) == "kexecfw: error: cannot write the output: No space left on device"
    assert proc.returncode == 4


def test_a_reader_that_stops_early_is_no_error():
    root = fixture_path("x86_64", "sysroot")
    proc = subprocess.run(f"{sys.executable} -m kexecfw --sysroot {root} memmap | head -c 5; "
                          "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "" and len(proc.stdout) == 5
