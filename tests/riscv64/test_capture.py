"""The capture side on a real riscv64 dump, read on this (x86_64) host: the lab's /proc/vmcore of the
Debian 13 guest, cut down to its notes and the pages `vmcore dmesg` reads (scripts/mini_vmcore.py).
Oracle: trixie's makedumpfile 1.7.6 --dump-dmesg on the full dump (run under qemu-riscv64-static)."""
from __future__ import annotations

import json
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw.plugins.riscv64.translate import Riscv64Translator
from kexecfw.vmcore.elfdump import ElfDump
from kexecfw.vmcore.kmem import KernelMemory
from tests.riscv64.conftest import DATA

CAPTURE = DATA / "capture"


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("riscv64") / "vmcore-mini.elf"
    out.write_bytes(lzma.decompress((CAPTURE / "vmcore-mini.elf.xz").read_bytes()))
    return out


def kexecfw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexecfw", *args], capture_output=True, text=True, timeout=60)


def test_dmesg_equals_makedumpfile(vmcore):
    run = kexecfw("vmcore", "dmesg", "--makedumpfile", str(vmcore))
    assert run.returncode == 0, run.stderr
    # makedumpfile 1.7.6 adds the caller id as "[      T0] "; kexecfw's --makedumpfile is 1.7.2's format
    expected = re.sub(r"(?m)^(\[ *\d+\.\d+\]) \[ *[TC]\d+\]", r"\1", (CAPTURE / "makedumpfile-dump-dmesg.txt").read_text())
    assert run.stdout == expected
    assert run.stdout.rstrip().endswith("Bye...")


def test_notes_name_riscv_registers(vmcore):
    run = kexecfw("vmcore", "notes", "--json", str(vmcore))
    assert run.returncode == 0, run.stderr
    notes = json.loads(run.stdout)
    assert notes["panic"] == {"cpu": 0, "pid": 1, "comm": "init"}
    # the panicking hart is in riscv_crash_save_regs (pc), called from __crash_kexec (ra, shown as lr)
    assert [(c["pid"], c["pc"], c["lr"]) for c in notes["cpus"]] == [
        (1, "0xffffffff8000e324", "0xffffffff80100e7c"), (0, "0xffffffff80a77964", "0xffffffff80a7795c")]


def test_dmesg_reads_the_plugins_capture_side_without_its_hooks(vmcore):
    """Only riscv64's capture module is imported: no hooks, no pluggy, no load side, no entry-point
    metadata (what a capture kernel pays for at start-up)."""
    import os
    import sysconfig
    from tests.installed_layout import installed_layout
    from tests.vmcore.test_dmesg_startup import imported_modules
    paths = sysconfig.get_paths()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KEXECFW_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(installed_layout()), paths["purelib"], paths["platlib"]])
    run = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "kexecfw", "vmcore", "dmesg", str(vmcore)],
                         capture_output=True, env=env, cwd=installed_layout(), timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    modules = imported_modules(run.stderr, but_not_by=frozenset({"runpy"}))
    assert {"kexecfw.plugins.riscv64.capture", "kexecfw.plugins.riscv64.translate"} <= modules
    assert not modules & {"pluggy", "kexecfw.plugins.riscv64.hooks", "kexecfw.model", "kexecfw.pluginmanager",
                          "importlib.metadata"}
    assert not [m for m in modules if m.startswith(("kexecfw.plugins.arm64.", "kexecfw.plugins.x86_64."))
                and not m.endswith(".capture")]


def test_info(vmcore):
    run = kexecfw("vmcore", "info", str(vmcore))
    assert run.returncode == 0, run.stderr
    assert "machine 243" in run.stdout and "6.12.118+deb13-riscv64" in run.stdout
    assert "sysrq triggered crash" in run.stdout


def test_translator_from_the_dump(vmcore):
    mem = KernelMemory(ElfDump(str(vmcore)))
    assert isinstance(mem.arch, Riscv64Translator) and mem.arch.levels == 5      # Sv57
    assert mem.utsname()["machine"] == "riscv64"


def test_a_kdump_file_of_a_riscv64_dump(vmcore, tmp_path):
    """kexecfw's kdump-compressed copy names its architecture (utsname riscv64) and carries phys_ram_base
    as the sub header's phys_base, which makedumpfile needs to find mem_section; its log is the ELF's."""
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.kdumpfmt import KDUMP_SUB_HEADER
    out = tmp_path / "vmcore.kdump"
    run = kexecfw("vmcore", "save", "-i", str(vmcore), "-d", "1", str(out))
    assert run.returncode == 0, run.stderr
    with open_dump(str(out)) as kdump, open_dump(str(vmcore)) as elf:
        assert kdump.machine == 243
        phys_ram_base = elf.vmcoreinfo.number("phys_ram_base")
        assert phys_ram_base and kdump.phys_base == phys_ram_base
        sub = KDUMP_SUB_HEADER.unpack_from(out.read_bytes(), kdump.page_size)
        assert sub[0] == phys_ram_base
    assert kexecfw("vmcore", "dmesg", str(out)).stdout == kexecfw("vmcore", "dmesg", str(vmcore)).stdout
