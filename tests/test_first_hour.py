"""What a new user meets first: plots that say where they went, `memmap --all` showing the whole
resource tree, `status --help` explaining its exit codes, the README's exit code table matching
kexecfw.errors.ExitCode, and progress lines that read well in a log (kexecfw.progress)."""
from __future__ import annotations

import io
import json
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw.errors import ExitCode
from tests.conftest import fixture_path

REPO = Path(__file__).resolve().parent.parent


def kexecfw(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexecfw", *args], capture_output=True, text=True, check=True,
                          timeout=300, cwd=cwd)


def test_memmap_plot_says_where_it_wrote(tmp_path):
    root = fixture_path("x86_64", "sysroot")
    r = kexecfw("--sysroot", str(root), "memmap", "--json", "--plot", "map.png", cwd=tmp_path)
    assert json.loads(r.stdout)["arch"] == "x86_64"          # stdout stays a JSON document
    assert r.stderr == f"kexecfw: wrote the memory map to {tmp_path / 'map.png'}\n"
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vmcore_notes_plot_says_where_it_wrote(tmp_path):
    dump = tmp_path / "vmcore.elf"
    dump.write_bytes(lzma.decompress(fixture_path("arm64", "capture", "vmcore-mini.elf.xz").read_bytes()))
    r = kexecfw("vmcore", "notes", "--no-symbols", "--plot", str(tmp_path / "notes.png"), str(dump))
    assert r.stderr == f"kexecfw: wrote the registers per CPU and the log's tail to {tmp_path / 'notes.png'}\n"
    assert (tmp_path / "notes.png").stat().st_size > 10_000


def test_memmap_all_is_the_whole_resource_tree():
    root = fixture_path("x86_64", "sysroot")
    plain = kexecfw("--sysroot", str(root), "memmap").stdout
    whole = kexecfw("--sysroot", str(root), "memmap", "--all").stdout.splitlines()
    assert "PCI Bus" not in plain and "IOAPIC" not in plain
    assert whole[0] == f"x86_64 resource tree from {root}/proc/iomem"
    # every line of /proc/iomem, nested as the kernel nests it
    iomem = (root / "proc" / "iomem").read_text().splitlines()
    assert len(whole) == len(iomem) + 2
    assert "0x0000fec00000-0x0000fec003ff : IOAPIC 0 (1 KiB)" in whole
    assert "    0x0000febf4000-0x0000febf7fff : virtio-pci-modern (16 KiB)" in whole
    assert "  0x00005d000000-0x000074ffffff : Crash kernel (384 MiB)  <== crash kernel" in whole
    doc = json.loads(kexecfw("--sysroot", str(root), "memmap", "--all", "--json").stdout)
    names = [r["name"] for r in doc["resources"]["regions"]]
    assert names.count("PCI Bus 0000:00") == 3 and "Local APIC" in names
    assert "resources" not in json.loads(kexecfw("--sysroot", str(root), "memmap", "--json").stdout)


def test_status_help_explains_its_exit_codes():
    text = kexecfw("status", "--help").stdout
    table = text[text.index("exit status"):].splitlines()[1:]
    assert [ln.split()[0] for ln in table] == ["0", "1", "2", "3"]
    assert "loaded" in table[0] and "kexec -S" in table[1] and "CONFIG_KEXEC" in table[3]


def test_readme_exit_codes_match_the_code():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Exit codes"):]
    section = section[:section.index("\n## ", 5)]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M)
    codes = {name: value for name, value in vars(ExitCode).items() if name.isupper()}
    assert {name: int(v) for v, name in rows} == codes


class Clock:
    """A clock the test moves by hand (Progress takes any monotonic clock)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_plain_lines_for_logs():
    from kexecfw.progress import Progress
    out, clock = io.StringIO(), Clock()
    p = Progress("lab", live=False, stream=out, clock=clock)
    p.phase("booting the first kernel (TCG)")
    clock.now += 4.25
    p.phase("first kernel up: snapshot")
    p.update("1/10 pages")                     # a counter's first plain line
    clock.now += 1
    p.update("2/10 pages")                     # within PLAIN_EVERY: not repeated
    p.note("lab: console in x/console.log")
    clock.now += 60.5
    p.done("x86_64 panic: OK")
    assert out.getvalue().splitlines() == [
        "lab: [   0.0s] booting the first kernel (TCG)",
        "lab: [   4.2s] first kernel up: snapshot",
        "lab: [   4.2s] first kernel up: snapshot: 1/10 pages",
        "lab: lab: console in x/console.log",
        "lab: x86_64 panic: OK in 65.8 s"]
    assert "\r" not in out.getvalue()


def test_progress_live_line_on_a_terminal():
    from kexecfw.progress import CLEAR, Progress
    out, clock = io.StringIO(), Clock()
    with Progress("lab", live=True, stream=out, clock=clock) as p:
        p.phase("booting")
        clock.now += 3
        p.update("50%")
        clock.now += 2
        p.phase("saving")
        clock.now += 1
        p.done("OK")
    text = out.getvalue()
    # each phase ends as a line with its time; the live line was redrawn in place before it
    assert text.split("\n") == [
        f"{CLEAR}lab: booting   0.0s  (total 0 s){CLEAR}lab: booting   3.0s  50%  (total 3 s)"
        f"{CLEAR}lab: booting   5.0s  50%",
        f"{CLEAR}lab: saving   0.0s  (total 5 s){CLEAR}lab: saving   1.0s",
        "lab: OK in 6.0 s", ""]


def test_progress_closed_by_an_error_ends_its_line():
    from kexecfw.progress import Progress
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress("lab", live=True, stream=out) as p:
            p.phase("building")
            raise RuntimeError("boom")
    assert out.getvalue().endswith("\n") and p._stop.is_set()


def test_lab_phases_follow_the_guests_console_marks(tmp_path):
    """run_qemu's on_mark, fed by a real process printing the guest's marks, drives the lab's phases."""
    from kexecfw.lab.qemu import run_qemu
    from kexecfw.lab.runner import _mark_phases
    from kexecfw.progress import Progress
    lines: list[str] = []
    progress = Progress("lab", live=False, write=lines.append)
    script = "echo 'LAB-MARK first-init uptime=4.1'; echo noise; echo LAB-MARK; " \
             "echo 'LAB-MARK crash uptime=9'; echo 'LAB-MARK capture-init uptime=3'"
    outcome = run_qemu(["sh", "-c", script], tmp_path / "console.log", timeout=30, silence=30,
                       on_mark=_mark_phases(progress))
    assert outcome.ended_by == "exit" and outcome.returncode == 0
    assert [ln.split("] ", 1)[1] for ln in lines] == [
        "first kernel up: snapshot", "crash: booting the capture kernel", "capture kernel up: reading /proc/vmcore"]


def test_the_wheel_builds_without_packaging_warnings(tmp_path):
    """setuptools' "Package 'kexecfw.lab.guest' is absent from the `packages` configuration" (one per data
    directory, ~150 lines in setup.sh) is gone: the data directories are packages of their own."""
    import zipfile
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "absent from the `packages` configuration" not in out and "would be ignored" not in out
    names = set(zipfile.ZipFile(next(tmp_path.glob("kexecfw-*.whl"))).namelist())
    assert {"kexecfw/lab/guest/init", "kexecfw/lab/guest/guest.py", "kexecfw/plugins/arm64/purgatory/purgatory.ro",
            "kexecfw/plugins/x86_64/purgatory/entry.S"} <= names
