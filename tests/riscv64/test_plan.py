"""Whole riscv64 panic and normal plans on the real Debian 13 guest's snapshot, checked against the
kernel's rules (the core validator runs in plan_load), dtc for the DTB, and the program headers read
back with struct, independently of kexecfw's ELF code."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from kexecfw.load import plan_load
from kexecfw.model import LoadOptions
from kexecfw.pluginmanager import Hooks, describe_plugins, new_plugin_manager
from tests.conftest import oracle
from tests.riscv64.conftest import IMAGE_SIZE, TEXT_OFFSET

CMDLINE = "console=ttyS0 maxcpus=1 reset_devices irqpoll panic=-1"
_2M = 2 << 20
CRASH = (0xACC00000, 0xBCC00000)           # iomem "Crash kernel" of the snapshot
PAGE_OFFSET, PHYS_RAM_BASE = 0xFF60000000000000, 0x80000000


@pytest.fixture
def initrd(tmp_path: Path) -> Path:
    path = tmp_path / "initrd"
    path.write_bytes(b"07070" + bytes(0x12345))
    return path


def test_registered_as_a_built_in_and_as_an_entry_point():
    # a built-in like the other two (no entry-point metadata read at start-up), and an entry point too, so
    # a wheel that blocks the built-ins still finds it
    pm = new_plugin_manager(entry_points=False)
    assert "riscv64" in [name for name, _ in pm.list_name_plugin()]
    from importlib.metadata import entry_points
    assert [ep.value for ep in entry_points(group="kexecfw") if ep.name == "riscv64"] == ["kexecfw.plugins.riscv64"]
    spec = Hooks(pm).arch("riscv64")
    assert (spec.elf_machine, spec.kexec_arch, spec.nr_kexec_load, spec.nr_reboot) == (243, 243 << 16, 104, 142)
    listed = {p["name"]: p for p in describe_plugins(pm)}
    assert listed["riscv64"]["module"] == "kexecfw.plugins.riscv64.hooks"      # the package's hooks module
    layout = Hooks(new_plugin_manager()).prstatus_registers(243)
    assert layout[:3] == ("pc", "ra", "sp") and (layout.pc, layout.sp, layout.lr) == ("pc", "sp", "ra")


def _phdrs(hdr: bytes) -> tuple[int, list[tuple[int, ...]]]:
    (e_type, e_machine, _, _, e_phoff, _, _, _, e_phentsize, e_phnum) = struct.unpack_from("<HHIQQQIHHH", hdr, 16)
    assert (hdr[:4], e_type, e_phentsize) == (b"\x7fELF", 4, 56)
    return e_machine, [struct.unpack_from("<IIQQQQQQ", hdr, e_phoff + i * 56) for i in range(e_phnum)]


def _dts(blob: bytes) -> str:
    return subprocess.run([oracle("dtc", "device-tree-compiler"), "-q", "-I", "dtb", "-O", "dts"], input=blob,
                          capture_output=True, check=True).stdout.decode()


def test_panic_plan(snapshot, kernel_file, initrd):
    plan, ctx = plan_load(LoadOptions(kernel=kernel_file, initrd=initrd, cmdline=CMDLINE, panic=True), snapshot)
    assert (plan.arch, plan.syscall, plan.flags) == ("riscv64", "kexec_load", (243 << 16) | 1)
    segs = {s.name: s for s in plan.segments}
    assert set(segs) == {"kernel", "initrd", "elfcorehdr", "dtb"}        # no purgatory
    kernel = segs["kernel"]
    assert plan.entry == kernel.mem and (kernel.mem - TEXT_OFFSET) % _2M == 0 and kernel.memsz == IMAGE_SIZE
    for s in segs.values():
        assert CRASH[0] <= s.mem and s.mem + s.memsz <= CRASH[1]
    # the kernel reserves itself up to _end rounded to 2 MiB: the initrd starts at or after that
    assert segs["initrd"].mem >= -(-(kernel.mem + kernel.memsz) // _2M) * _2M
    hdr_seg, dtb_seg = segs["elfcorehdr"], segs["dtb"]

    dts = _dts(dtb_seg.buf)
    initrd_end = segs["initrd"].mem + initrd.stat().st_size
    assert f'bootargs = "{CMDLINE}";' in dts
    assert f"linux,initrd-start = <0x00 {segs['initrd'].mem:#x}>;" in dts
    assert f"linux,initrd-end = <0x00 {initrd_end:#x}>;" in dts
    assert f"linux,elfcorehdr = <0x00 {hdr_seg.mem:#x} 0x00 {hdr_seg.bufsz:#x}>;" in dts
    assert f"linux,usable-memory-range = <0x00 {CRASH[0]:#x} 0x00 {CRASH[1] - CRASH[0]:#x}>;" in dts

    machine, phdrs = _phdrs(hdr_seg.buf)
    assert machine == 243
    notes = [p for p in phdrs if p[0] == 4]
    loads = [(p[3], p[4], p[5]) for p in phdrs if p[0] == 1]        # vaddr, paddr, size
    assert len(notes) == 2 + 1                                        # two harts' crash_notes, VMCOREINFO
    # kernel image: iomem "Kernel image" 0x80202000-0x8206b3f7 at _text (kallsyms) 0xffffffff80002000
    assert loads[0] == (0xFFFFFFFF80002000, 0x80202000, 0x8206B3F8 - 0x80202000)
    # all RAM outside the crash region, the Reserved ranges inside it included (mem_section's at 0xbdc00000),
    # but not OpenSBI's PMP-protected /reserved-memory/mmode_resv0 at 0x80000000-0x8007ffff
    assert [(p, s) for _, p, s in loads[1:]] == [(0x80080000, CRASH[0] - 0x80080000), (CRASH[1], 0xC0000000 - CRASH[1])]
    assert any(p <= 0xBDC00000 < p + s for _, p, s in loads[1:])
    for vaddr, paddr, _ in loads[1:]:
        assert vaddr == paddr - PHYS_RAM_BASE + PAGE_OFFSET
    assert any("Sv57" in line for line in ctx.log)


def test_normal_plan(snapshot, kernel_file, initrd):
    plan, _ = plan_load(LoadOptions(kernel=kernel_file, initrd=initrd, cmdline="quiet"), snapshot)
    segs = {s.name: s for s in plan.segments}
    assert set(segs) == {"kernel", "initrd", "dtb"} and plan.flags == 243 << 16
    assert (segs["kernel"].mem - TEXT_OFFSET) % _2M == 0
    dts = _dts(segs["dtb"].buf)
    assert "linux,elfcorehdr" not in dts and "linux,usable-memory-range" not in dts
    assert 'bootargs = "quiet";' in dts
