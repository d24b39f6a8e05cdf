"""Real first kernels of both generations booted in QEMU, snapshotted by a small /init, then planned
against: Debian 12's 6.1 (48-bit VA, no _text in kallsyms) and 6.12 (52-bit VA with LPA2 on -cpu max,
_text listed). The derivation of _text and of the linear map must hold on both."""
from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest

from kexecfw.elfnotes import PT_LOAD, parse_elf_header
from kexecfw.load import plan_load
from kexecfw.memory.iomem import read_iomem
from kexecfw.model import LoadOptions
from kexecfw.plugins.arm64.vmcore_facts import kallsyms_symbol, kernel_address_space, read_vmcoreinfo
from kexecfw.sysroot import Sysroot
from tests.arm64.conftest import build_initramfs, need_tool

pytestmark = pytest.mark.slow
MACHINE = ["-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on", "-m", "2048", "-smp", "2",
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
           "-no-reboot"]
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")


def parse_snapshot(console: str, dest: Path) -> Path:
    """Write the files framed by snapshot_init.c under ``dest``."""
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


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from tests.arm64.conftest import _image_or_skip
    image = _image_or_skip(request.param)
    qemu = need_tool("qemu-system-aarch64")
    work = tmp_path_factory.mktemp(f"guest-{request.param}")
    initrd = build_initramfs(work, Path(__file__).with_name("snapshot_init.c"))
    cmdline = "console=ttyAMA0 crashkernel=256M quiet rdinit=/init"
    out = subprocess.run([qemu, *MACHINE, "-kernel", str(image), "-initrd", str(initrd), "-append", cmdline],
                         capture_output=True, timeout=600)
    console = out.stdout.decode(errors="replace")
    assert "KEXECFW-SNAPSHOT-END" in console, console[-3000:]
    return request.param, image, parse_snapshot(console, work / "sysroot")


def test_text_and_linear_map(guest) -> None:
    generation, _, root = guest
    sysroot = Sysroot(root)
    info = read_vmcoreinfo(sysroot)
    space = kernel_address_space(sysroot, read_iomem(sysroot), info)
    listed = kallsyms_symbol(sysroot, "_text")
    if generation == "6.1":
        assert listed is None                                  # KALLSYMS_ALL=n: derived, not looked up
        assert space.va_bits == 48 and space.page_offset == 0xFFFF000000000000
    else:
        assert listed == space.text_vaddr and space.text_source.endswith("matches kallsyms")
        assert space.va_bits == 52 and space.page_offset == 0xFFF0000000000000
    # _text - KERNELOFFSET is KIMAGE_VADDR = MODULES_END (arch/arm64/include/asm/memory.h):
    # _PAGE_END(VA_BITS_MIN = 48) + MODULES_VSIZE, 128 MiB on 6.1 and 2 GiB on 6.12.
    kimage_vaddr = {"6.1": 0xFFFF800008000000, "6.12": 0xFFFF800080000000}[generation]
    assert space.text_vaddr - space.kernel_offset == kimage_vaddr
    assert space.text_paddr % (2 << 20) == 0


def test_panic_plan_on_the_guest(guest) -> None:
    generation, image, root = guest
    plan, ctx = plan_load(LoadOptions(kernel=image, initrd=None, cmdline="console=ttyAMA0 maxcpus=1", panic=True),
                          Sysroot(root), arch="arm64")
    memmap = ctx.memmap
    crash = memmap.main_crash_region
    assert crash is not None and crash.size == 256 << 20
    assert all(crash.contains(s.range) for s in plan.segments)
    header = parse_elf_header(plan.segment("elfcorehdr").buf, "elfcorehdr")
    loads = [p for p in header.phdrs if p.type == PT_LOAD]
    space = ctx.artifacts["arm64_address_space"]
    assert (loads[0].vaddr, loads[0].paddr) == (space.text_vaddr, space.text_paddr)
    assert [(p.paddr, p.paddr + p.filesz) for p in loads[1:]] == [(r.start, r.end) for r in memmap.crash_dump_ranges]
    assert all(p.vaddr == space.linear_vaddr(p.paddr) for p in loads[1:])
