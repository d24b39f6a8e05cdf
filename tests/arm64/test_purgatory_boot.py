"""Run a planned panic load on an emulated arm64 machine, without a first kernel: QEMU's generic loader
puts each segment at its physical address and starts CPU 0 at the plan's entry, as the kernel's kexec
relocation code would. The shipped purgatory must check the sha256, then enter the real Debian kernel
with x0 = our DTB, and that kernel must boot as a crash kernel with our /chosen.

What the crashed first kernel would have left in memory is put back too: the crash notes (NT_PRSTATUS
per CPU) and the VMCOREINFO note of the fixture's real crash, at the addresses its sysroot lists. Then
/proc/vmcore must come out exactly as large as it was in that real run with kexec-tools."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from kexecfw.load import plan_load
from kexecfw.model import LoadOptions
from kexecfw.sysroot import Sysroot
from tests.arm64.conftest import build_initramfs
from tests.conftest import oracle

pytestmark = pytest.mark.slow
CMDLINE = "console=ttyAMA0 maxcpus=1 reset_devices panic=-1 rdinit=/init kexecfw.marker=purgatory-boot"
# The machine the fixture's device tree describes (fixtures/arm64/qemu-cmdline.txt).
MACHINE = ["-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on", "-m", "2048", "-smp", "4",
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
           "-no-reboot"]


@pytest.fixture(scope="module")
def initramfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_initramfs(tmp_path_factory.mktemp("initramfs"), Path(__file__).with_name("boot_init.c"))


def crashed_kernel_memory(fixture: Path, sysroot: Path) -> list[tuple[int, bytes]]:
    """(address, bytes) of each CPU's crash note and of the VMCOREINFO note, from the real vmcore's notes."""
    from kexecfw.elfnotes import read_core_notes
    data = (fixture / "capture" / "vmcore-hdr+notes.bin").read_bytes()
    _, notes = read_core_notes(data, "vmcore-hdr+notes.bin")
    raw = []
    for note in notes:   # re-serialise each note as the kernel stores it: Elf64_Nhdr, name, desc (4-aligned)
        name = note.name + b"\0"
        pad = lambda b: b + bytes(-len(b) % 4)
        raw.append(struct.pack("<III", len(name), len(note.desc), note.type) + pad(name) + pad(note.desc))
    root = Sysroot(sysroot)
    cpus = root.crash_notes()
    assert len(raw) == len(cpus) + 1
    vmcoreinfo_addr, _ = root.vmcoreinfo_location()
    return [(c.address, r) for c, r in zip(cpus, raw)] + [(vmcoreinfo_addr, raw[-1])]


def run_plan(plan, tmp_path: Path, timeout: int, tamper: str | None = None,
             memory: list[tuple[int, bytes]] = ()) -> str:
    qemu = oracle("qemu-system-aarch64", "qemu-system-arm")
    args = list(MACHINE)
    for i, (addr, blob) in enumerate(memory):
        path = tmp_path / f"mem{i}.bin"
        path.write_bytes(blob)
        args += ["-device", f"loader,file={path},addr={addr:#x},force-raw=on"]
    for seg in plan.segments:
        data = bytes(seg.buf)      # a segment may be a view of its file (kexecfw.load.read_input)
        if seg.name == tamper:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        path = tmp_path / f"{seg.name}.bin"
        path.write_bytes(data)
        args += ["-device", f"loader,file={path},addr={seg.mem:#x},force-raw=on"]
    args += ["-device", f"loader,addr={plan.entry:#x},cpu-num=0"]
    try:
        out = subprocess.run([qemu, *args], capture_output=True, timeout=timeout)
        return out.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return (e.stdout or b"").decode(errors="replace")


@pytest.fixture()
def plan(any_arm64_image: Path, initramfs: Path, arm64_sysroot: Path):
    """A panic load of either kernel generation as the crash kernel of the fixture's 6.1 guest."""
    options = LoadOptions(kernel=any_arm64_image, initrd=initramfs, cmdline=CMDLINE, panic=True)
    return plan_load(options, Sysroot(arm64_sysroot), arch="arm64")[0]


def test_purgatory_enters_the_crash_kernel_with_our_dtb(plan, tmp_path: Path, arm64_fixture: Path,
                                                        arm64_sysroot: Path) -> None:
    memory = crashed_kernel_memory(arm64_fixture, arm64_sysroot)
    console = run_plan(plan, tmp_path, timeout=600, memory=memory)
    hdr = plan.segment("elfcorehdr")
    assert "Booting Linux on physical CPU" in console, console[-2000:]
    assert f"Kernel command line: {CMDLINE}" in console
    real_size = (arm64_fixture / "capture" / "vmcore-size.txt").read_text().split("=")[1].strip()
    assert f"KEXECFW-INIT vmcore=present size={real_size}" in console, console[-3000:]
    assert f"KEXECFW-INIT elfcorehdr={hdr.mem:016x}{hdr.bufsz:016x}" in console
    assert "KEXECFW-INIT usable=00000000a1a000000000000018000000" in console


def test_normal_load_boots_the_next_kernel(arm64_image: Path, initramfs: Path, arm64_sysroot: Path,
                                          tmp_path: Path) -> None:
    cmdline = "console=ttyAMA0 rdinit=/init kexecfw.marker=normal-kexec"
    options = LoadOptions(kernel=arm64_image, initrd=initramfs, cmdline=cmdline)
    plan = plan_load(options, Sysroot(arm64_sysroot), arch="arm64")[0]
    console = run_plan(plan, tmp_path, timeout=600)
    assert f"Kernel command line: {cmdline}" in console, console[-2000:]
    assert "KEXECFW-INIT vmcore=absent" in console
    assert "KEXECFW-INIT elfcorehdr=\r\n" in console        # no crash properties in a normal load's DTB


def test_purgatory_refuses_a_changed_segment(plan, tmp_path: Path) -> None:
    console = run_plan(plan, tmp_path, timeout=45, tamper="initrd")   # a good run boots in ~10 s
    assert "Booting Linux" not in console
