"""What vmcore save tells beside the dump: a level it could not apply, a codec whose module is missing.

A dump whose struct pages cannot be read is saved whole, and the save says the level was not applied. The cut-down fixtures hold the notes and the printk ring but no mem_section or mem_map (like the dump of
kexec-tools 2.0.32 on riscv64, which leaves mem_section's Reserved range out): every page is kept, and
a header saying "level 31" alone would let a reader think the free and cache pages were filtered.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def save(vmcore, out, level: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-d", level, "--input", str(vmcore),
                           *extra, str(out)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_pages_without_struct_pages_are_said_unfiltered(mini_vmcores, tmp_path, arch):
    run = save(mini_vmcores[arch], tmp_path / "a.kdump", "31", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    unfiltered = doc["excluded_no_mem_map"]
    assert unfiltered > 0
    (warning,) = run.stderr.splitlines()
    assert warning == (f"kexecfw: warning: {unfiltered} pages were kept unfiltered: their struct pages are not in "
                       "the dump (its mem_section or mem_map cannot be read), so level 31 could not classify them")


def test_no_warning_where_the_level_needs_no_struct_pages(mini_vmcores, tmp_path):
    run = save(mini_vmcores["x86_64"], tmp_path / "a.kdump", "1")
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_zstd_without_its_module_is_one_line(mini_vmcores, tmp_path):
    # riscv64 has no zstandard wheel on PyPI: there the module may be missing, and -c zstd must say what to do
    code = ("import sys; sys.modules['zstandard'] = None; from kexecfw.cli import main; "
            f"sys.exit(main(['vmcore', 'save', '-c', 'zstd', '--input', {str(mini_vmcores['x86_64'])!r}, "
            f"{str(tmp_path / 'a.kdump')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    assert run.stderr.splitlines() == ["kexecfw: error: -c zstd needs the zstandard module (pip install zstandard, "
                                       "or apt-get install python3-zstandard); or use -c zlib"]
    assert not list(tmp_path.iterdir())
