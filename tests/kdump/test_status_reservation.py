"""A crash region too small for the capture kernel and initrd, said before any crash: `status` (exit 3) and
`enable` give what is reserved, what kexecfw.crashkernel's estimate needs for the configured kernel and
initrd, by how much it is short and the crashkernel= to set. Real guests' sysroots whose /proc/iomem
"Crash kernel" range is cut down; the real Debian kernel the guest ran."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from kexecfw import crashkernel
from kexecfw.kdump import initrd_path
from kexecfw.memory.iomem import read_iomem
from kexecfw.sysroot import Sysroot
from tests.conftest import fixture_kernel
from tests.kdump.conftest import kdump, make_root, recorded, release_of
from tests.kdump.test_service import _initrd_built

_CRASH = re.compile(r"^(\s*)([0-9a-f]+)-([0-9a-f]+) : Crash kernel$", re.M)


def reserve(root, size: int) -> None:
    """Make the root's /proc/iomem reserve ``size`` bytes for the crash kernel (same start)."""
    text = (root / "proc/iomem").read_text()
    m = _CRASH.search(text)
    start = int(m[2], 16)
    line = f"{m[1]}{start:0{len(m[2])}x}-{start + size - 1:0{len(m[3])}x} : Crash kernel"
    (root / "proc/iomem").write_text(text[:m.start()] + line + text[m.end():])


def _needed(root) -> int:
    """What kexecfw.crashkernel's estimate says for the root's capture kernel and initrd (one CPU: nr_cpus=1)."""
    release = release_of(root)
    est = crashkernel.estimate(str(root / f"boot/vmlinuz-{release}"), str(root / initrd_path(release).lstrip("/")),
                               cpus=1, ram=read_iomem(Sysroot(root)).ram_size)
    return est["total"]


@pytest.fixture(params=["x86_64", "arm64"])
def small_root(request, tmp_path):
    root = make_root(tmp_path, request.param)
    shutil.copy(fixture_kernel(request.param), root / f"boot/vmlinuz-{release_of(root)}")
    _initrd_built(root)
    reserve(root, 64 << 20)
    return root


def test_status_says_how_much_is_missing_and_what_to_set(small_root):
    needed = _needed(small_root)
    assert needed > 64 << 20                 # the premise: 64 MiB is too small for this kernel
    mib = -(-needed // (1 << 20))
    out = kdump(small_root, "status")
    assert out.returncode == 3, out.stderr
    assert f"reservation    64 MiB reserved, {mib} MiB needed (kexecfw.crashkernel estimate): {mib - 64} MiB short; " \
           f"set crashkernel={mib}M and reboot (`kexecfw kdump enable` writes it for GRUB)" in out.stdout
    doc = json.loads(kdump(small_root, "status", "--json").stdout)
    check = next(c for c in doc["checks"] if c["check"] == "reservation")
    assert not check["ok"] and check["required"] and not doc["armed"]
    assert doc["reservation"]["reserved"] == 64 << 20 and doc["reservation"]["needed"] == needed


def test_enable_without_grub_says_what_to_add(small_root):
    mib = -(-_needed(small_root) // (1 << 20))
    done = kdump(small_root, "enable", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["reboot_needed"] is True and "load" not in doc
    assert f"the crash region is too small: 64 MiB reserved, {mib} MiB needed" in doc["notes"][-2]
    assert doc["notes"][-1] == (f"no GRUB here: add crashkernel={mib}M to the kernel command line of your boot "
                                "loader yourself, then reboot")
    assert "load-panic" not in [a["action"] for a in recorded(small_root)]


def test_enable_with_grub_reserves_the_estimate_and_the_next_boot_is_armed_for_it(small_root):
    needed = _needed(small_root)
    mib = -(-needed // (1 << 20))
    (small_root / "etc/default").mkdir(parents=True)
    (small_root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    done = kdump(small_root, "enable")
    assert done.returncode == 0, done.stderr
    assert f"{mib - 64} MiB short" in done.stdout and "REBOOT NEEDED" in done.stdout
    assert f'crashkernel={mib}M"' in (small_root / "etc/default/grub.d/kexecfw-kdump.cfg").read_text()
    assert ["update-grub"] in [a.get("argv") for a in recorded(small_root)]
    # the reboot reserves what GRUB asks for: the reservation check holds
    reserve(small_root, mib << 20)
    check = next(c for c in json.loads(kdump(small_root, "status", "--json").stdout)["checks"]
                 if c["check"] == "reservation")
    assert check["ok"] and check["detail"].startswith(f"{mib} MiB reserved, {mib} MiB needed")


def test_load_on_a_short_reservation_loads_but_records_the_warning(small_root):
    """The load unit still arms what it can (a capture kernel that fits may yet save), and says why status
    does not call the machine armed; `load` and `reload` print the warning on stderr."""
    reserve(small_root, 96 << 20)
    if _needed(small_root) <= 96 << 20:
        pytest.skip("the estimate fits in 96 MiB for this kernel")
    out = kdump(small_root, "load", "--json")
    assert out.returncode == 0, out.stderr
    warnings = json.loads(out.stdout)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("the crash region is too small: 96 MiB reserved, ")
    assert out.stderr == f"kexecfw: warning: {warnings[0]}\n"
    release = release_of(small_root)
    for action in ("load", "reload"):
        done = kdump(small_root, action)
        assert done.returncode == 0 and done.stderr == f"kexecfw: warning: {warnings[0]}\n", done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith(f"loaded /boot/vmlinuz-{release} (sha256 ") and f"with {initrd_path(release)} " \
            in lines[0] and lines[1].startswith("cmdline: ") and "actions.log" in lines[2], done.stdout
    # reload unloads what load loaded, then loads (planned before: see test_status_config.py)
    assert [a["action"] for a in recorded(small_root)][-3:] == ["unload-panic", "load-panic", "write"]
