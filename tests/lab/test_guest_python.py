"""The guest userland works before any boot: its Python (run through its own ld.so, or qemu-user
for arm64) imports what kexecfw needs, and kexecfw itself from the guest's site dir."""
from __future__ import annotations

from pathlib import Path

import pytest

from kexecfw.lab.cache import cache_dir
from kexecfw.lab.hostprep import ensure_host_tools
from kexecfw.lab.initramfs import SITE, build_site
from kexecfw.lab.targets import arch_target, generation
from kexecfw.lab.userland import prepare_userland, run_guest_python

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("arch_name", ["arm64", "x86_64"])]


def test_guest_python_runs_kexecfw(arch_name: str, tmp_path: Path) -> None:
    arch = arch_target(arch_name)
    ensure_host_tools(arch)
    userland = prepare_userland(arch, generation("6.1"), cache_dir(), log=lambda _m: None)
    assert (userland.root / "bin/busybox").is_file()
    assert (userland.root / "sbin/kexec").is_file() and (userland.root / "usr/bin/makedumpfile").is_file()
    assert [p.name for p in sorted((userland.root / "lib/modules").rglob("*.ko"))]
    notes = build_site(arch, userland, tmp_path / "site", cache_dir() / "wheels")
    site = str(tmp_path / "site" / SITE)
    out = run_guest_python(arch, userland.root, userland.python, [
        "-P", "-c", "import ctypes, hashlib, mmap, struct, zlib, lzma, json, platform;"
              "import kexecfw, pluggy, elftools, fdt;"
              "from kexecfw.plugins import arm64, x86_64;"
              "print(platform.machine(), kexecfw.__version__, hashlib.sha256(b'').hexdigest()[:8])"],
        extra_env={"PYTHONPATH": site})
    machine, _version, digest = out.split()
    assert machine == {"arm64": "aarch64", "x86_64": "x86_64"}[arch_name]
    assert digest == "e3b0c442"
    if not notes:
        zstd = run_guest_python(arch, userland.root, userland.python,
                                ["-P", "-c", "import zstandard; print(zstandard.backend)"], extra_env={"PYTHONPATH": site})
        assert zstd.strip() == "cext"
    help_text = run_guest_python(arch, userland.root, userland.python, ["-P", "-m", "kexecfw", "--help"],
                                 extra_env={"PYTHONPATH": site})
    assert "load" in help_text and "vmcore" in help_text
