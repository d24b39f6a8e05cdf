"""Real kdump cycles on both kernel generations in QEMU, planned by kexecfw on the host, loaded by the
guest kernel's own kexec_load, with no Python in the guest (tests/arm64/kdump_init.c does the guest side
over the serial console):

1. the first kernel (Debian 12's 6.1: 48-bit VA, no _text in kallsyms; or 6.12, built for 52-bit VA:
   with LPA2 on -cpu max, and without it (lpa2=off: the same kernel falls back to 48 bits at run time,
   PHYS_OFFSET absorbs the difference); _text listed) prints a sysroot snapshot;
2. kexecfw plans a panic load on that snapshot; the guest loads the plan with kexec_load and crashes;
3. the capture kernel reports /proc/vmcore's headers and notes, and the /chosen values it booted with.
"""
from __future__ import annotations

import base64
import os
import sys
import re
import subprocess
import threading
from pathlib import Path

import pytest

from kexecfw.elfnotes import PT_LOAD, PT_NOTE, parse_elf_header
from kexecfw.load import plan_load
from kexecfw.memory.iomem import read_iomem
from kexecfw.model import LoadOptions
from kexecfw.plugins.arm64.vmcore_facts import kernel_address_space
from kexecfw.running import kallsyms_symbol, read_vmcoreinfo
from kexecfw.sysroot import Sysroot
from tests.arm64.conftest import arm64_kernel, build_initramfs
from tests.conftest import oracle

pytestmark = pytest.mark.slow
SMP = 2
MACHINE = ["-M", "virt", "-accel", "tcg,thread=multi", "-m", "2048", "-smp", str(SMP), "-nodefaults",
           "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]
# (kernel generation, QEMU CPU): 6.12 with and without FEAT_LPA2 (52-bit or 48-bit VA at run time)
GUESTS = {"6.1": ("6.1", "max,pauth-impdef=on"), "6.12": ("6.12", "max,pauth-impdef=on"),
          "6.12-no-lpa2": ("6.12", "max,pauth-impdef=on,lpa2=off")}
FIRST_CMDLINE = "console=ttyAMA0 crashkernel=256M quiet rdinit=/init"
CAPTURE_CMDLINE = "console=ttyAMA0 maxcpus=1 reset_devices panic=-1 rdinit=/init kexecfw.role=capture"
SECOND_CMDLINE = "console=ttyAMA0 quiet rdinit=/init kexecfw.role=second"
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")


def parse_snapshot(console: str, dest: Path) -> Path:
    """Write the files framed by kdump_init.c under ``dest``."""
    lines = console.replace("\r", "").split("\n")
    begin = lines.index("KEXECFW-SNAPSHOT-BEGIN")
    end = lines.index("KEXECFW-SNAPSHOT-END")
    current: tuple[str, int, int] | None = None
    chunks: list[str] = []

    def flush() -> None:
        if current is None:
            return
        rel, size, sent = current
        data = base64.b64decode("".join(chunks))
        assert len(data) == sent, f"{rel}: got {len(data)} of {sent} bytes (console interleaving?)"
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data + bytes(size - sent))

    for line in lines[begin + 1:end]:
        if line.startswith("KEXECFW-FILE "):
            flush()
            _, rel, size, sent = line.split()
            current, chunks = (rel, int(size), int(sent)), []
        elif _B64.match(line):
            chunks.append(line)
    flush()
    return dest


def manifest(plan, files: dict[str, str]) -> bytes:
    """The plan in kdump_init.c's words: segments named in ``files`` come from the guest's initramfs."""
    out = []
    for seg in plan.segments:
        if seg.name in files:
            out.append(f"SEG {seg.mem:x} {seg.memsz:x} file {files[seg.name]}")
        else:
            out.append(f"SEG {seg.mem:x} {seg.memsz:x} data {seg.bufsz}")
            text = base64.b64encode(seg.buf).decode()
            out.extend(text[i:i + 76] for i in range(0, len(text), 76))
            out.append(".")
    out.append(f"LOAD {plan.entry:x} {plan.flags:x}")
    return ("\n".join(out) + "\n").encode()


class Cycle:
    def __init__(self, generation: str, image: Path, sysroot: Path, plan, ctx, console: str) -> None:
        self.generation, self.image, self.sysroot, self.plan, self.ctx = generation, image, sysroot, plan, ctx
        self.console = console.replace("\r", "")

    def lines(self, prefix: str) -> list[str]:
        """What follows ``prefix`` on each console line holding it (kernel messages may share the line)."""
        return [line.split(prefix, 1)[1].strip() for line in self.console.split("\n") if prefix in line]


def run_cycle(guest: str, work: Path, panic: bool) -> Cycle:
    """Boot the first kernel, plan on its snapshot, have it load the plan, and follow the console to the end."""
    generation, cpu = GUESTS[guest]
    image = arm64_kernel(generation)
    qemu = oracle("qemu-system-aarch64", "qemu-system-arm")
    init = Path(__file__).with_name("kdump_init.c")
    next_cpio = build_initramfs(work / "next", init)
    first_cpio = build_initramfs(work / "first", init, {"kernel": image, "next.cpio": next_cpio})
    proc = subprocess.Popen([qemu, *MACHINE, "-cpu", cpu, "-kernel", str(image), "-initrd", str(first_cpio),
                             "-append", FIRST_CMDLINE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    console: list[str] = []
    waiting = threading.Event()

    def reader() -> None:
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            console.append(line)
            if os.environ.get("KEXECFW_TEST_ECHO"): print(line, end="", file=sys.stderr)
            if line.startswith("KEXECFW-WAITING-PLAN"):
                waiting.set()
        waiting.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        if not waiting.wait(timeout=600):
            pytest.fail("the first kernel did not print its snapshot:\n" + "".join(console)[-3000:])
        sysroot = parse_snapshot("".join(console), work / "sysroot")
        options = LoadOptions(kernel=image, initrd=next_cpio, cmdline=CAPTURE_CMDLINE if panic else SECOND_CMDLINE,
                              panic=panic)
        plan, ctx = plan_load(options, Sysroot(sysroot), arch="arm64")
        assert plan.segment("kernel").buf == image.read_bytes()      # the guest loads /kernel itself
        proc.stdin.write(manifest(plan, {"kernel": "/kernel", "initrd": "/next.cpio"}))
        proc.stdin.flush()
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        thread.join(timeout=10)
    result = Cycle(guest, image, sysroot, plan, ctx, "".join(console))
    print("\n".join(line for line in result.console.split("\n") if line.startswith(("KEXECFW-C", "KEXECFW-P",
                                                                                  "KEXECFW-N", "KEXECFW-L"))))
    return result


@pytest.fixture(scope="module", params=list(GUESTS))
def cycle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Cycle:
    """A panic load, a crash, the capture kernel."""
    return run_cycle(request.param, tmp_path_factory.mktemp(f"kdump-{request.param}"), panic=True)


@pytest.fixture(scope="module", params=["6.1", "6.12-no-lpa2"])
def exec_cycle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Cycle:
    """A normal load and reboot(RB_KEXEC) into the second kernel.

    Not 6.12 with LPA2: Debian's 6.12.117 oopses in trans_pgd_create_copy() (machine_kexec_post_load)
    for any normal kexec_load when running with 52-bit VA, before the plan matters; a kernel bug that
    kexec-tools hits as well (the lab with --loader kexec-tools)."""
    return run_cycle(request.param, tmp_path_factory.mktemp(f"exec-{request.param}"), panic=False)


def test_text_and_linear_map_of_the_first_kernel(cycle: Cycle) -> None:
    sysroot = Sysroot(cycle.sysroot)
    info = read_vmcoreinfo(sysroot)
    space = kernel_address_space(sysroot, read_iomem(sysroot), info)
    listed = kallsyms_symbol(sysroot, "_text")
    tcr_t1sz = info.get_int("NUMBER(TCR_EL1_T1SZ)")
    if cycle.generation == "6.1":
        assert listed is None                                  # KALLSYMS_ALL=n: derived, not looked up
        assert space.va_bits == 48 and space.page_offset == 0xFFFF000000000000
    else:
        assert listed == space.text_vaddr and space.text_source.endswith("matches kallsyms")
        # PAGE_OFFSET follows the configured VA_BITS, whatever the hardware gives (T1SZ = 64 - bits)
        assert space.va_bits == 52 and space.page_offset == 0xFFF0000000000000
        assert tcr_t1sz == (16 if cycle.generation == "6.12-no-lpa2" else 12)
    # _text - KERNELOFFSET is KIMAGE_VADDR = MODULES_END (arch/arm64/include/asm/memory.h):
    # _PAGE_END(VA_BITS_MIN = 48) + MODULES_VSIZE, 128 MiB on 6.1 and 2 GiB on 6.12.
    kimage_vaddr = 0xFFFF800008000000 if cycle.generation == "6.1" else 0xFFFF800080000000
    assert space.text_vaddr - space.kernel_offset == kimage_vaddr
    assert space.text_paddr % (2 << 20) == 0


def test_plan_on_the_snapshot(cycle: Cycle) -> None:
    memmap, plan = cycle.ctx.memmap, cycle.plan
    crash = memmap.main_crash_region
    assert crash is not None and crash.size == 256 << 20
    assert all(crash.contains(s.range) for s in plan.segments)
    header = parse_elf_header(plan.segment("elfcorehdr").buf, "elfcorehdr")
    loads = [p for p in header.phdrs if p.type == PT_LOAD]
    space = cycle.ctx.artifacts["arm64_address_space"]
    assert (loads[0].vaddr, loads[0].paddr) == (space.text_vaddr, space.text_paddr)
    assert [(p.paddr, p.paddr + p.filesz) for p in loads[1:]] == [(r.start, r.end) for r in memmap.crash_dump_ranges]
    assert all(p.vaddr == space.linear_vaddr(p.paddr) for p in loads[1:])


def test_guest_loaded_the_plan(cycle: Cycle) -> None:
    assert cycle.lines("KEXECFW-LOADED") == [f"rc=0 segments={len(cycle.plan.segments)}"], cycle.console[-3000:]
    assert cycle.lines("KEXECFW-STATE crash_loaded=") == ["310a"]                 # "1\n"


def test_capture_kernel_booted_with_our_chosen(cycle: Cycle) -> None:
    assert f"Kernel command line: {CAPTURE_CMDLINE}" in cycle.console, cycle.console[-3000:]
    hdr = cycle.plan.segment("elfcorehdr")
    crash = cycle.ctx.memmap.main_crash_region
    assert cycle.lines("KEXECFW-CHOSEN elfcorehdr=") == [f"{hdr.mem:016x}{hdr.bufsz:016x}"]
    assert cycle.lines("KEXECFW-CHOSEN usable=") == [f"{crash.start:016x}{crash.size:016x}"]


def test_vmcore_covers_ram_outside_the_crash_region(cycle: Cycle) -> None:
    phdrs = [dict(kv.split("=") for kv in line.split()) for line in cycle.lines("KEXECFW-PHDR")]
    assert phdrs, cycle.console[-3000:]
    loads = [(int(p["paddr"], 16), int(p["paddr"], 16) + int(p["filesz"], 16), int(p["vaddr"], 16))
             for p in phdrs if int(p["type"]) == PT_LOAD]
    memmap = cycle.ctx.memmap
    space = cycle.ctx.artifacts["arm64_address_space"]
    assert loads[0] == (space.text_paddr, space.text_paddr + space.text_size, space.text_vaddr)
    assert [(a, b) for a, b, _ in loads[1:]] == [(r.start, r.end) for r in memmap.crash_dump_ranges]
    size = int(cycle.lines("KEXECFW-CAPTURE vmcore-size=")[0])
    assert size >= sum(b - a for a, b, _ in loads)


def test_vmcore_notes(cycle: Cycle) -> None:
    notes = cycle.lines("KEXECFW-NOTE")
    prstatus = [n for n in notes if n.startswith("name=CORE type=1 ")]
    assert len(prstatus) == SMP, notes            # one NT_PRSTATUS per online CPU of the crashed kernel
    assert any(n.startswith("name=VMCOREINFO type=0 ") for n in notes)
    assert len([p for p in cycle.lines("KEXECFW-PHDR") if p.startswith(f"type={PT_NOTE} ")]) == 1


def test_normal_load_and_exec_boots_the_second_kernel(exec_cycle: Cycle, tmp_path: Path) -> None:
    assert exec_cycle.lines("KEXECFW-LOADED") == [f"rc=0 segments={len(exec_cycle.plan.segments)}"]
    assert exec_cycle.lines("KEXECFW-STATE loaded=") == ["310a"]
    tail = exec_cycle.console.split("KEXECFW-EXEC", 1)[1]
    assert "KEXECFW-SNAPSHOT-END" in tail, tail[-3000:]    # the second kernel's /init ran and said:
    second = parse_snapshot(tail, tmp_path / "second")
    assert (second / "proc" / "cmdline").read_text().strip() == SECOND_CMDLINE
