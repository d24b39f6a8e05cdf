"""Run a QEMU guest with its serial console captured, under hard timeouts.

A guest that hangs must end in a clear failure with the tail of its console,
never block a CI run: the run is killed after ``timeout`` seconds in total or
``silence`` seconds without console output. Console lines starting with
``LAB`` (the guest /init's marks) are time-stamped on the host as they arrive.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kexecfw.lab.errors import LabError
from kexecfw.lab.targets import HOST_ARCH, ArchTarget



@dataclass
class Disk:
    path: Path
    serial: str
    format: str = "raw"   # "qcow2" for a copy-on-write overlay (full-OS guests' root disk)


@dataclass
class QemuOutcome:
    returncode: int | None
    seconds: float
    console: Path
    host_marks: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, LAB line)
    ended_by: str = "exit"  # exit | timeout | silence | deadline:<mark>

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])


def qemu_command(arch: ArchTarget, kernel: Path, initrd: Path | None, append: str, mem_mib: int, smp: int,
                 disks: list[Disk], accel: str, network: bool = False) -> list[str]:
    """``network``: a virtio NIC on QEMU's user-mode network (the guest reaches the host's loopback as 10.0.2.2)."""
    accel_arg = "kvm" if accel == "kvm" else "tcg,thread=multi"
    cpu_args = list(arch.machine_args)
    if accel == "kvm":
        cpu_args[cpu_args.index("-cpu") + 1] = "host"
    cmd = [arch.qemu_system, *cpu_args, "-accel", accel_arg, "-m", str(mem_mib), "-smp", str(smp),
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
           "-no-reboot", "-kernel", str(kernel), "-append", append]
    if initrd:
        cmd += ["-initrd", str(initrd)]
    for i, disk in enumerate(disks):
        cmd += ["-drive", f"file={disk.path},format={disk.format},if=none,id=d{i},cache=unsafe",
                "-device", f"{arch.virtio_blk_device},drive=d{i},serial={disk.serial}"]
    if network:
        cmd += ["-nic", "user,model=virtio-net-pci"]
    return cmd


def run_qemu(cmd: list[str], console: Path, timeout: float, silence: float,
             deadlines: dict[str, float] | None = None,
             on_mark: Callable[[str], None] | None = None) -> QemuOutcome:
    """Run QEMU until it exits (the guest powers off or reboots with -no-reboot) or a timeout.

    ``deadlines``: a console mark (the start of a LAB line) -> seconds by which it must have appeared;
    a boot that misses one is ended there (``ended_by="deadline:<mark>"``) instead of at ``timeout``.
    ``on_mark``: called with each LAB line as it arrives (the live progress of ``lab run``).
    """
    if not shutil.which(cmd[0]):
        raise LabError(f"{cmd[0]} is not installed: run `python -m kexecfw lab prepare` (or apt-get install qemu-system)")
    start = time.monotonic()
    outcome = QemuOutcome(None, 0.0, console)
    last_output = [start]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def pump() -> None:
        assert proc.stdout is not None
        with open(console, "wb") as log:
            for raw in iter(proc.stdout.readline, b""):
                now = time.monotonic()
                last_output[0] = now
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").strip("\r\n")
                if line.startswith("LAB"):
                    outcome.host_marks.append((round(now - start, 3), line))
                    if on_mark is not None:
                        on_mark(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - start > timeout:
                outcome.ended_by = "timeout"
                break
            if now - last_output[0] > silence:
                outcome.ended_by = "silence"
                break
            missed = [mark for mark, limit in (deadlines or {}).items() if now - start > limit
                      and not any(line.startswith(mark) for _, line in list(outcome.host_marks))]
            if missed:
                outcome.ended_by = f"deadline:{missed[0]}"
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    outcome.returncode = proc.returncode
    outcome.seconds = round(time.monotonic() - start, 3)
    return outcome


def kvm_usable(arch: ArchTarget, kernel: Path, cache: Path, probe_seconds: float = 20.0) -> bool:
    """Does KVM boot this kernel here? Probed once (kernel to its root-mount panic) and cached.

    On hosts without nested virtualisation /dev/kvm opens but the guest hangs
    right after the decompressor, so opening /dev/kvm proves nothing.
    """
    if arch.name != HOST_ARCH or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    record = cache / "kvm-probe.json"
    key = f"{platform.release()} {arch.name}"
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return bool(known[key])
    console = cache / "kvm-probe-console.log"
    cmd = qemu_command(arch, kernel, None, f"console={arch.console} panic=-1", 256, 1, [], "kvm")
    outcome = run_qemu(cmd, console, timeout=probe_seconds, silence=probe_seconds)
    text = console.read_text(errors="replace")
    works = outcome.ended_by == "exit" and ("Kernel panic" in text or "VFS:" in text)
    known[key] = works
    record.write_text(json.dumps(known, indent=2) + "\n")
    return works
