"""What a panic load imports: its own architecture's modules, and no more.

Start-up is most of a ``load -p`` in an emulated (TCG) guest, where each import costs ten times what
it does here. Not timed: the modules a dry-run load leaves in ``sys.modules`` are the check.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import debian_kernel_or_skip, fixture_kernel, fixture_kernel_package, fixture_path

# Runs one CLI command quietly, then prints the names of the modules it imported, and as "!MODULE" each
# module that ran an import of a NOT_EVEN_ONCE module (on the host those may be in sys.modules from the
# start: an editable install's import finder uses pathlib).
CODE = """
import builtins, os, sys
watched, importers, real_import = set(sys.argv[1].split(",")), set(), builtins.__import__
def watching(name, globals=None, *args, **kwargs):
    if name in watched:
        importers.add((globals or {}).get("__name__", "?"))
    return real_import(name, globals, *args, **kwargs)
builtins.__import__ = watching
from kexecfw.cli import main
real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
code = main(sys.argv[2:])
names = sorted(sys.modules) + [f"!{m}" for m in sorted(importers)]
real_stdout.write(" ".join(names) if code == 0 else f"exit {code}")
"""

# Never needed by a load of a built-in architecture: pyelftools (the purgatory is read with struct),
# the entry-point scan (importlib.metadata, and email through it), plotting, shutil (and bz2/lzma
# through it: argparse's help formatter asked it for the terminal width), datetime and platform
# (only a snapshot writes its metadata); argparse, gettext and locale (a plain load command line is read
# by kexecfw.cli.options), dataclasses, copy and weakref (the load's records are kexecfw.records.Record),
# the dump readers (kmem, dumpfile) and the translators.
NEVER = ("elftools", "importlib.metadata", "email", "matplotlib", "zstandard", "shutil", "bz2", "lzma",
         "datetime", "platform", "argparse", "gettext", "locale", "dataclasses", "copy", "weakref",
         "kexecfw.vmcore.kmem", "kexecfw.vmcore.dumpfile", "kexecfw.plugins.arm64.translate",
         "kexecfw.plugins.x86_64.translate")
# Not imported by a load at all: pathlib and what it imports (urllib.parse, ipaddress, fnmatch) cost a load
# ~50 ms in an emulated guest; the load path works on str paths (kexecfw.sysroot).
NOT_EVEN_ONCE = ("pathlib", "urllib.parse", "ipaddress", "fnmatch")


def modules_of_load(arch: str, kernel: Path, *extra: str) -> set[str]:
    sysroot = fixture_path(arch, "sysroot")
    argv = ["--sysroot", str(sysroot), "load", "-p", *extra, "--skip-sha256", "--dry-run", str(kernel),
            "--initrd", str(kernel), "--append", "console=ttyS0"]
    env = {k: v for k, v in os.environ.items() if k != "KEXECFW_DISABLE_PLUGIN_AUTOLOAD"}
    out = subprocess.run([sys.executable, "-c", CODE, ",".join(NOT_EVEN_ONCE), *argv], capture_output=True,
                         text=True, timeout=120, check=True, env=env).stdout
    assert not out.startswith("exit"), out
    return set(out.split())


def importers_of_unwanted(modules: set[str]) -> list[str]:
    """The modules that imported one of NOT_EVEN_ONCE (marked "!" by CODE)."""
    return sorted(m[1:] for m in modules if m.startswith("!"))


def unneeded(modules: set[str], other_arch: str) -> list[str]:
    # the other architecture's plugin is registered (its package and the capture-side register
    # layouts are imported), but none of the modules that plan its loads
    allowed = {f"kexecfw.plugins.{other_arch}{sub}" for sub in ("", ".hooks", ".capture")}
    return sorted(m for m in modules if m in NEVER or m.startswith(tuple(f"{n}." for n in NEVER))
                  or (m.startswith(f"kexecfw.plugins.{other_arch}") and m not in allowed))


def test_x86_64_panic_load_imports_only_what_it_uses() -> None:
    modules = modules_of_load("x86_64", fixture_kernel("x86_64"), "--classic")
    assert "kexecfw.plugins.x86_64.bootparams" in modules          # the load did run
    bad = unneeded(modules, "arm64") + sorted(m for m in modules if m in ("fdt", "kexecfw.memory.devicetree"))
    assert not bad, bad
    assert not importers_of_unwanted(modules), importers_of_unwanted(modules)


def test_arm64_panic_load_imports_only_what_it_uses() -> None:
    modules = modules_of_load("arm64", debian_kernel_or_skip("arm64", "6.1", fixture_kernel_package("arm64")))
    assert "kexecfw.dtboot" in modules
    bad = unneeded(modules, "x86_64")
    assert not bad, bad
    assert not importers_of_unwanted(modules), importers_of_unwanted(modules)
