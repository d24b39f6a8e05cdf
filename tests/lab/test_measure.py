"""The lab's dump measurements, without a boot: guest.py measure (peak RSS, time, output size),
guest.py's fill pattern, --memory sizes, and the data-disk slots /init and the host share."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import kexecfw.lab
from kexecfw.cli.lab import _mib
from kexecfw.lab.datadisk import DISK_MIB, SLOTS

GUEST = Path(kexecfw.lab.__file__).parent / "guest"


def _guest_module():
    spec = importlib.util.spec_from_file_location("lab_guest", GUEST / "guest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_reports_the_commands_own_peak(tmp_path: Path) -> None:
    """As /init runs it: guest.py measure is a small process of its own, so wait4's ru_maxrss is the
    command's peak (this test process is far bigger than 48 MiB and would leave only the polled
    VmHWM, which can miss a peak reached in the last poll interval)."""
    out, report = tmp_path / "out.bin", tmp_path / "big.measure"
    code = f"b = bytearray(48 << 20); b[::4096] = b'x' * len(b[::4096]); open({str(out)!r}, 'wb').write(b'abc')"
    wrapper = subprocess.run([sys.executable, str(GUEST / "guest.py"), "measure", str(report), str(out),
                              sys.executable, "-c", code])
    assert wrapper.returncode == 0
    m = json.loads(report.read_text())
    assert m["rc"] == 0 and m["output_bytes"] == 3 and m["seconds"] > 0
    assert 48 << 10 <= m["max_rss_kib"] < 96 << 10


def test_measure_is_not_the_wrappers_peak(tmp_path: Path) -> None:
    """exec hands the parent's high-water mark to the child: a tiny command must not report it."""
    guest = _guest_module()
    ballast = bytearray(64 << 20)       # make this process (the wrapper) big
    ballast[::4096] = b"x" * len(ballast[::4096])
    report = tmp_path / "small.measure"
    assert guest.measure(str(report), str(tmp_path / "none"), ["sleep", "0.3"]) == 0
    m = json.loads(report.read_text())
    assert m["ru_maxrss_kib"] >= 64 << 10          # what GNU time would say here
    assert 0 < m["max_rss_kib"] < 16 << 10
    assert m["output_bytes"] is None
    del ballast


def test_measure_passes_the_exit_code_on(tmp_path: Path) -> None:
    guest = _guest_module()
    report = tmp_path / "fail.measure"
    assert guest.measure(str(report), str(tmp_path / "none"), [sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert json.loads(report.read_text())["rc"] == 3


def test_fill_pattern_is_neither_zero_nor_trivial() -> None:
    block = _guest_module()._pattern(1 << 20)
    assert len(block) == 1 << 20
    pages = [block[i:i + 4096] for i in range(0, len(block), 4096)]
    assert all(p.count(0) < 1024 for p in pages)
    ratio = len(zlib.compress(pages[7], 1)) / 4096
    assert 0.4 < ratio < 0.75


@pytest.mark.parametrize("text, mib", [("1024", 1024), ("8G", 8192), ("8GiB", 8192), ("1536M", 1536)])
def test_memory_sizes(text: str, mib: int) -> None:
    assert _mib(text) == mib


def test_slots_match_the_guest_init() -> None:
    init = (GUEST / "init").read_text()
    offsets = {name: int(v) for name, v in re.findall(r"^(SLOT2_MIB|DUMP\d_MIB)=(\d+)", init, re.M)}
    assert offsets == {"SLOT2_MIB": SLOTS["second"], "DUMP1_MIB": SLOTS["dump-kexecfw"],
                       "DUMP2_MIB": SLOTS["dump-makedumpfile"], "DUMP3_MIB": SLOTS["dump-kexecfw-zstd"]}
    assert max(SLOTS.values()) + 256 <= DISK_MIB
