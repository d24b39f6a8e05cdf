"""`kexecfw load` without argparse: the plain command lines give argparse's values, the others go to argparse."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kexecfw.cli import build_parser, fast_path
from kexecfw.cli.load import OPTIONS, parse_fast
from tests.conftest import fixture_path

PLAIN = [
    ["load", "K"],
    ["load", "-p", "K", "--initrd", "I", "--append", "console=ttyS0 root=/dev/vda"],
    ["--sysroot", "/tmp/s", "--arch", "arm64", "load", "K", "-p", "--ramdisk=I", "--command-line=a b"],
    ["load", "-s", "--file-load", "K"],                    # one option, both spellings
    ["load", "-c", "--skip-sha256", "-n", "--json", "-v", "--reuse-cmdline", "K", "--dtb", "D"],
    ["load", "--file-load", "--save-segments", "out", "--plot", "p.png", "K"],
    ["load", "--append", "", "K"],
    ["load", "--append=", "K", "--initrd", "a", "--initrd", "b"],
    ["load", ""],
]
NOT_PLAIN = [
    ["load"], ["load", "a", "b"], ["load", "--help"], ["load", "-h", "K"], ["load", "--", "K"],
    ["load", "-pn", "K"], ["load", "--init", "I", "K"], ["load", "K", "--append"], ["load", "K", "--append", "-x"],
    ["load", "K", "--append", "a", "--command-line", "b"], ["load", "K", "--classic", "--file-load"], ["load", "-c", "-s", "K"],
    ["load", "K", "--json=yes"], ["load", "-", "K"], ["load", "K", "--unknown"], ["load", "-1"],
    ["--arch=arm64", "load", "K"], ["--sysroot", "load", "K"], ["--sysroot", "-x", "load", "K"],
    ["--verbose", "load", "K"], ["load", "K", "--arch", "arm64"],
]


def argparse_values(argv: list[str]) -> dict[str, object]:
    values = vars(build_parser(only="load").parse_args(argv))
    values.pop("_run")
    return values


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_a_plain_command_line_gets_argparses_values(argv: list[str]) -> None:
    found = fast_path(argv)
    assert found is not None
    at = argv.index("load")
    fast = parse_fast(argv[at + 1:])
    assert fast is not None
    globals_ = dict(zip(argv[:at:2], argv[1:at:2]))
    fast.update(sysroot=globals_.get("--sysroot", "/"), arch=globals_.get("--arch"), command="load")
    assert fast == argparse_values(argv)


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=" ".join)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert fast_path(argv) is None


def test_every_option_is_plain_in_each_spelling() -> None:
    for o in OPTIONS:
        for flag in o.flags:
            words = [flag, "V"] if o.metavar else [flag]
            assert parse_fast([*words, "K"])[o.dest] == ("V" if o.metavar else o.const), flag


def test_the_fast_path_plans_what_argparse_plans() -> None:
    sysroot = fixture_path("x86_64", "sysroot")
    kernel = fixture_path("x86_64", "kernel-package")      # not a kernel: both refuse it the same way
    env = {**os.environ, "KEXECFW_DISABLE_PLUGIN_AUTOLOAD": "1"}

    def run(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kexecfw", "--sysroot", str(sysroot), "load", "-p", "--dry-run",
                               *words], capture_output=True, text=True, env=env, timeout=120)
    fast, parsed = run(str(kernel)), run("--", str(kernel))     # "--": argparse
    assert fast.returncode == parsed.returncode == 3 and fast.stderr == parsed.stderr
    assert "is not a kernel image the x86_64 plugin can load" in fast.stderr


def test_a_fast_load_ends_at_once_with_its_output_and_files_complete(tmp_path) -> None:
    """The fast path ends with os._exit (kexecfw.cli.run): stdout, --json and --save-segments are whole."""
    import json

    from tests.conftest import fixture_kernel
    kernel = fixture_kernel("x86_64")
    out = tmp_path / "segments"
    argv = [sys.executable, "-m", "kexecfw", "--sysroot", str(fixture_path("x86_64", "sysroot")), "load", "-p",
            "--classic", "--dry-run", "--json", "--save-segments", str(out), str(kernel), "--initrd", str(kernel)]
    assert fast_path(argv[3:]) is not None
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KEXECFW_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert json.loads((out / "plan.json").read_text()) == plan
    for i, seg in enumerate(plan["segments"]):
        assert (out / f"{i:02d}-{seg['name']}.bin").stat().st_size == int(seg["bufsz"], 16)
