"""`vmcore dmesg FILE` start-up: the argparse-free fast path, and what the command imports.

Not timed (timing belongs to bench/run.py): these pin down the causes of a slow start instead,
the modules a capture kernel would have to import before printing the log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest

from kexecfw.cli import fast_path
from tests.installed_layout import installed_layout

# Each of these costs ~0.5-8 ms of start-up, none is needed to print an uncompressed dump's log.
NOT_IMPORTED = ("argparse", "re", "enum", "typing", "dataclasses", "shutil", "lzma", "bz2", "zlib",
                "zstandard", "gettext", "locale", "pathlib", "json", "pluggy", "elftools", "collections",
                "importlib", "warnings")


def run_kexecfw(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    """``python -m kexecfw ARGS`` from this source tree, without site (no .pth import hooks of an
    editable install, no sitecustomize): the modules imported are kexecfw's own doing. The
    installed packages (codecs) stay importable."""
    flags = ["-S", *(["-X", "importtime"] if importtime else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    paths = sysconfig.get_paths()
    layout = installed_layout()   # without site, kexecfw.plugins is importable only from the installed layout
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(layout), paths["purelib"], paths["platlib"]]))
    return subprocess.run([sys.executable, *flags, "-m", "kexecfw", *args], capture_output=True, env=env,
                          cwd=layout, timeout=60)


def imported_modules(importtime_stderr: bytes, but_not_by: frozenset[str] = frozenset()) -> set[str]:
    """The modules -X importtime reports, without those imported (directly or not) by ``but_not_by``."""
    # lines "import time: <self us> | <cumulative us> | <indent><module>", each after the modules it imported
    found: set[str] = set()
    pending: list[tuple[int, str]] = []
    for line in importtime_stderr.splitlines():
        if not line.startswith(b"import time:") or line.count(b"|") != 2:
            continue
        field = line.rsplit(b"|", 1)[1].decode()
        name = field.strip()
        depth = len(field) - len(field.lstrip())
        children = [p for p in pending if p[0] > depth]
        pending = [p for p in pending if p[0] <= depth]
        if name not in but_not_by:
            pending += children
        pending.append((depth, name))
    found.update(name for _, name in pending)
    return found


def test_fast_path_takes_exactly_vmcore_dmesg_and_one_path():
    assert fast_path(["vmcore", "dmesg", "vmcore.elf"]) is not None
    for argv in (["vmcore", "dmesg"], ["vmcore", "dmesg", "a", "b"], ["vmcore", "dmesg", "--json", "a"],
                 ["vmcore", "dmesg", "a", "--level"], ["vmcore", "dmesg", "-"], ["vmcore", "dmesg", "--help"],
                 ["vmcore", "dmesg", "--", "a"], ["--sysroot", "/", "vmcore", "dmesg", "a"],
                 ["vmcore", "info", "a"], ["vmcore", "dmesgx", "a"]):
        assert fast_path(argv) is None, argv


def test_fast_path_and_argparse_print_the_same_log(mini_vmcores, expected_dmesg):
    path = str(mini_vmcores["x86_64"])
    fast = run_kexecfw("vmcore", "dmesg", path)
    parsed = run_kexecfw("vmcore", "dmesg", "--", path)      # "--": not the fast path, same arguments
    assert fast.returncode == parsed.returncode == 0, (fast.stderr, parsed.stderr)
    assert fast.stdout == parsed.stdout == expected_dmesg["x86_64"]


def test_fast_path_and_argparse_fail_the_same_way(tmp_path):
    missing = str(tmp_path / "no-such-vmcore")
    fast = run_kexecfw("vmcore", "dmesg", missing)
    parsed = run_kexecfw("vmcore", "dmesg", "--", missing)
    assert fast.returncode == parsed.returncode == 3
    assert fast.stderr == parsed.stderr and b"no such file" in fast.stderr


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_vmcore_dmesg_imports_only_what_it_needs(arch, mini_vmcores):
    done = run_kexecfw("vmcore", "dmesg", str(mini_vmcores[arch]), importtime=True)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = imported_modules(done.stderr, but_not_by=frozenset({"runpy"}))   # -m's, not the command's
    assert "kexecfw.vmcore.dmesg" in modules     # the parse saw the run
    assert not modules & set(NOT_IMPORTED), sorted(modules & set(NOT_IMPORTED))


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_a_compressed_dump_imports_only_its_codec(codec, mini_vmcores, tmp_path):
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.writer import DumpWriter
    out = tmp_path / f"{codec}.kdump"
    with open_dump(str(mini_vmcores["x86_64"])) as dump:
        DumpWriter(dump, 31, codec).write(str(out))
    done = run_kexecfw("vmcore", "dmesg", str(out), importtime=True)
    assert done.returncode == 0, done.stderr[-2000:]
    codec_module = {"zlib": "zlib", "zstd": "zstandard"}[codec]
    modules = imported_modules(done.stderr, but_not_by=frozenset({codec_module, "runpy"}))   # their own imports
    assert codec_module in modules
    assert not modules & (set(NOT_IMPORTED) - {codec_module}), sorted(modules & set(NOT_IMPORTED))


def test_the_command_ends_without_teardown_yet_flushes_everything(mini_vmcores, expected_dmesg, tmp_path):
    """The fast path leaves with os._exit: its whole output must be written first, to a file or a
    pipe, and a reader that stops early is no error (as for every command)."""
    out = tmp_path / "dmesg.txt"
    with open(out, "wb") as f:
        done = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", str(mini_vmcores["arm64"])],
                              stdout=f, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 0 and done.stderr == b""
    assert out.read_bytes() == expected_dmesg["arm64"]
    head = subprocess.run(f"{sys.executable} -m kexecfw vmcore dmesg {mini_vmcores['x86_64']} | head -c 10; "
                          "echo \" ${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash", capture_output=True,
                          timeout=60)
    assert head.stdout == expected_dmesg["x86_64"][:10] + b" 0\n" and head.stderr == b""


def test_the_fast_path_reports_a_full_disk_in_one_line(mini_vmcores):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", str(mini_vmcores["x86_64"])],
                              stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 4
    assert done.stderr == b"kexecfw: error: cannot write the output: No space left on device\n"
