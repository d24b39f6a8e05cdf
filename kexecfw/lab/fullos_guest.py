"""Booting a full-OS guest (kexecfw.lab.fullos): a copy-on-write disk per run, one host script per boot.

    image = base_image(ImageRecipe(arch="x86_64"))
    guest = FullOsGuest(image, Path("lab-results/service-x86_64"))
    boot = guest.boot('lab_step status /opt/kexecfw/bin/kexecfw status\\nlab_next reboot\\n',
                      append="crashkernel=256M")
    boot.run(1).step("status").out

Each :meth:`FullOsGuest.boot` is one QEMU process (``-no-reboot``: a reboot or power-off ends it; a
panic kexec'ing into a capture kernel stays in it). Before it starts the host writes a small ext4 disk
(serial ``labscript``) with ``run.sh`` and the given files, and an empty ext4 results disk (serial
``labresults``). The image's agent unit runs the disk's ``agent.sh`` (guest/fullos-agent) once the boot is
done; it sources ``run.sh`` (helpers ``lab_step``, ``lab_mark``, ``lab_next poweroff|reboot|crash|none``),
writes ``runs/N/`` on the results disk and does what ``lab_next`` said; after QEMU exits the host copies the results disk out with debugfs. The root disk
is a qcow2 overlay on the cached base image, kept for the whole run, so boots of a run see each other's
changes; kexecfw is pip-installed from this checkout's wheel by the first boot of a run.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kexecfw.lab.cache import cache_dir
from kexecfw.lab.errors import LabError
from kexecfw.lab.fullos import VENV, BaseImage, _run, guest_file, guest_wheelhouse, kexecfw_requirements, make_ext4
from kexecfw.lab.qemu import Disk, QemuOutcome, qemu_command, run_qemu
from kexecfw.lab.targets import arch_target

RESULTS_DISK_MIB = 1024          # sparse; a scenario may copy a dump onto it
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bin", "kexecfw", "plugins")
AGENT_START = "LABAGENT start"
AGENT_DONE = "LABAGENT done"
Log = Callable[[str], None]


def kexecfw_wheel(cache: Path | None = None, log: Log = print) -> Path:
    """A wheel of this checkout (pip wheel), cached by the content of what goes into it."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():
        raise LabError(f"kexecfw is not run from a source checkout ({checkout}): the lab installs the checkout")
    files = sorted(_source_files(checkout))
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0" + (checkout / rel).read_bytes() + b"\0")
    shelf = cache_dir(cache) / "fullos" / "kexecfw-wheels" / digest.hexdigest()[:16]
    found = sorted(shelf.glob("kexecfw-*.whl"))
    if found:
        return found[0]
    log("building a kexecfw wheel from this checkout")
    with tempfile.TemporaryDirectory(prefix="kexecfw-wheel-") as tmp:
        src = Path(tmp) / "src"
        for rel in files:   # a copy: setuptools writes build/ and *.egg-info next to the sources
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / rel, src / rel)
        out = Path(tmp) / "out"
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
             "pip wheel of this checkout", timeout=600)
        built = sorted(out.glob("kexecfw-*.whl"))
        if not built:
            raise LabError("pip wheel of this checkout produced no kexecfw wheel")
        shelf.mkdir(parents=True, exist_ok=True)
        for old in shelf.parent.iterdir():   # earlier checkouts' wheels
            if old != shelf:
                shutil.rmtree(old, ignore_errors=True)
        shutil.copy2(built[0], shelf / built[0].name)
    return shelf / built[0].name


def _source_files(checkout: Path) -> list[str]:
    found = []
    for top in WHEEL_SOURCES:
        path = checkout / top
        if path.is_file():
            found.append(top)
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info")]
            found += [os.path.relpath(os.path.join(dirpath, f), checkout) for f in filenames
                      if not f.endswith((".pyc", ".pyo"))]
    return found


def dependency_wheels(image: BaseImage, cache: Path | None = None) -> dict[str, Path]:
    """Script-disk files ``wheels/NAME`` for kexecfw's current runtime requirements, built for the image's
    Python and platform: pip in the guest (no internet) takes what its venv lacks from there."""
    house = guest_wheelhouse(arch_target(image.arch), image.python, kexecfw_requirements(), cache_dir(cache))
    return {f"wheels/{w.name}": w for w in sorted(house.glob("*.whl"))}


INSTALLED_MARK = f"{VENV}/.lab-wheel-sha256"


def install_kexecfw_lines(wheel: Path) -> str:
    """run.sh lines installing the wheel as the README says (pip into /opt/kexecfw, offline); skipped when that
    very wheel is installed already, e.g. in the capture boot, which sources the same run.sh again."""
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return (f'if [ "$(cat {INSTALLED_MARK} 2>/dev/null)" != {sha} ]; then\n'
            f"    lab_step install-kexecfw {VENV}/bin/pip install --disable-pip-version-check --no-index "
            f'--find-links "$LAB_SCRIPT_DIR/wheels" "$LAB_SCRIPT_DIR/wheels/{wheel.name}" '
            f"&& echo {sha} > {INSTALLED_MARK}\n"
            "fi\n")


def script_disk(path: Path, script: str, files: dict[str, Path | bytes] | None = None) -> Path:
    """The ``labscript`` disk: an ext4 image holding agent.sh (guest/fullos-agent), run.sh and the files
    (name -> host path or bytes)."""
    with tempfile.TemporaryDirectory(prefix="labscript-") as tmp:
        tree = Path(tmp)
        (tree / "run.sh").write_text(script)
        agent = guest_file("fullos-agent")
        (tree / "agent.sh").write_bytes(agent)
        size = len(script) + len(agent)
        for name, content in (files or {}).items():
            dest = tree / name
            if dest.resolve().parent != tree.resolve() and tree.resolve() not in dest.resolve().parents:
                raise LabError(f"script disk file {name!r} is outside the disk")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                shutil.copy2(content, dest)
            size += dest.stat().st_size
        return make_ext4(path, max(16, 2 * (size >> 20) + 8), tree, label="labscript")


def read_ext4_dir(image: Path, guest_dir: str, dest: Path) -> Path | None:
    """Copy guest_dir out of an ext4 image (debugfs rdump, no mount) into dest/<its name>; None if absent."""
    dest.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["debugfs", "-R", f"stat {guest_dir}", str(image)], capture_output=True, text=True)
    if probe.returncode != 0 or "Inode:" not in probe.stdout:
        return None
    _run(["debugfs", "-R", f"rdump {guest_dir} {dest}", str(image)], f"debugfs rdump {guest_dir}")
    return dest / Path(guest_dir).name


def read_ext4_file(image: Path, guest_path: str) -> str | None:
    """A text file of an ext4 image (debugfs cat, no mount); None if absent."""
    probe = subprocess.run(["debugfs", "-R", f"stat {guest_path}", str(image)], capture_output=True, text=True)
    if probe.returncode != 0 or "Inode:" not in probe.stdout:
        return None
    return _run(["debugfs", "-R", f"cat {guest_path}", str(image)], f"debugfs cat {guest_path}")


@dataclass
class StepResult:
    name: str
    rc: int | None
    out: str
    err: str
    seconds: float | None


@dataclass
class AgentRun:
    """What one start of the agent left on the results disk (runs/N/)."""
    path: Path

    def _text(self, name: str) -> str:
        try:
            return (self.path / name).read_text(errors="replace")
        except OSError:
            return ""

    @property
    def rc(self) -> int | None:
        text = self._text("rc").strip()
        return int(text) if text.lstrip("-").isdigit() else None

    @property
    def cmdline(self) -> str:
        return self._text("cmdline").strip()

    def steps(self) -> list[str]:
        return self._text("steps.txt").split()

    def step(self, name: str) -> StepResult:
        base = self.path / "steps"
        rc = self._text(f"steps/{name}.rc").strip()
        times = self._text(f"steps/{name}.uptime").split()
        if not (base / f"{name}.rc").exists():
            raise LabError(f"the guest ran no step {name!r} in {self.path} (steps: {', '.join(self.steps()) or 'none'})")
        return StepResult(name, int(rc) if rc.lstrip("-").isdigit() else None, self._text(f"steps/{name}.out"),
                          self._text(f"steps/{name}.err"),
                          round(float(times[1]) - float(times[0]), 2) if len(times) == 2 else None)


@dataclass
class Boot:
    name: str
    outcome: QemuOutcome
    results: Path           # the results disk's runs/ copied out (may be empty)
    agent_seconds: float | None = None   # QEMU start -> the agent's start marker
    runs: list[AgentRun] = field(default_factory=list)

    def run(self, n: int = 1) -> AgentRun:
        if n > len(self.runs):
            raise LabError(f"boot {self.name}: the agent ran {len(self.runs)} time(s), no run {n} "
                           f"(QEMU ended by {self.outcome.ended_by} after {self.outcome.seconds} s):\n{self.outcome.tail()}")
        return self.runs[n - 1]

    def marks(self, prefix: str = "LABAGENT") -> list[tuple[float, str]]:
        return [(t, line) for t, line in self.outcome.host_marks if line.startswith(prefix)]


class FullOsGuest:
    """One run's guest: a qcow2 overlay on the base image in ``results_dir/disks/``, booted as often as asked."""

    def __init__(self, image: BaseImage, results_dir: Path, *, mem_mib: int = 1024, smp: int = 2,
                 cache: Path | None = None, log: Log = print, install_kexecfw: bool = True) -> None:
        self.image = image
        self.arch = arch_target(image.arch)
        self.dir = Path(results_dir)
        self.disks = self.dir / "disks"
        self.disks.mkdir(parents=True, exist_ok=True)
        self.mem_mib, self.smp, self.log = mem_mib, smp, log
        self.overlay = self.disks / "root.qcow2"
        if not self.overlay.exists():
            _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.root.resolve()),
                  str(self.overlay)], "qemu-img create of the root overlay")
        self.wheel = kexecfw_wheel(cache, log) if install_kexecfw else None
        self.cache = cache
        self.boots: list[Boot] = []

    def command_line(self, append: str = "") -> str:
        parts = [f"root=/dev/vda rw console={self.arch.console} panic=-1", self.arch.kernel_args, append]
        return " ".join(p for p in parts if p)

    def boot(self, script: str, *, name: str | None = None, files: dict[str, Path | bytes] | None = None,
             append: str = "", kernel: Path | None = None, initrd: Path | None = None,
             timeout: float = 600, silence: float = 240, agent_deadline: float = 300,
             deadlines: dict[str, float] | None = None, results_mib: int = RESULTS_DISK_MIB) -> Boot:
        """Boot once with ``script`` as run.sh (see the module doc); returns when QEMU has exited.

        The first boot of a guest made with ``install_kexecfw`` installs this checkout's wheel into /opt/kexecfw
        before the script. ``agent_deadline``: seconds by which the agent must have started, else the boot is
        ended (a hung boot under TCG shows in its console); ``deadlines`` adds others (console mark -> seconds
        since QEMU started, e.g. ``{"LABAGENT start run=2": 240}`` for a capture boot's agent). ``results_mib``:
        the (sparse) results disk's size, for scripts that copy dumps onto it. A failed boot is a :class:`Boot` whose runs are
        missing; callers assert on what they need.
        """
        name = name or f"boot{len(self.boots) + 1}"
        boot_dir = self.dir / name
        boot_dir.mkdir(parents=True, exist_ok=True)
        files = dict(files or {})
        if self.wheel is not None and not self.boots:
            files.update(dependency_wheels(self.image, self.cache))
            files[f"wheels/{self.wheel.name}"] = self.wheel
            script = install_kexecfw_lines(self.wheel) + script
        (boot_dir / "run.sh").write_text(script)
        script_img = script_disk(self.disks / f"{name}-script.img", script, files)
        results_img = make_ext4(self.disks / f"{name}-results.img", results_mib, label="labresults")
        disks = [Disk(self.overlay, "root", format="qcow2"), Disk(script_img, "labscript"),
                 Disk(results_img, "labresults")]
        if self.arch.virtio_blk_device == "virtio-blk-device":
            disks.reverse()   # virtio-mmio (arm64 virt): the kernel finds the last one first; the root is /dev/vda
        cmd = qemu_command(self.arch, kernel or self.image.kernel, initrd or self.image.initrd,
                           self.command_line(append), self.mem_mib, self.smp, disks, "tcg", network=True)
        (boot_dir / "qemu-cmdline.txt").write_text(shlex.join(cmd) + "\n")
        self.log(f"{name}: booting the full-OS guest ({self.image.release})")
        outcome = run_qemu(cmd, boot_dir / "console.log", timeout=timeout, silence=silence,
                           deadlines={AGENT_START: agent_deadline, **(deadlines or {})})
        results = read_ext4_dir(results_img, "/runs", boot_dir) or boot_dir / "runs"
        runs = sorted((p for p in results.glob("*") if p.name.isdigit()), key=lambda p: int(p.name)) \
            if results.exists() else []
        started = [t for t, line in outcome.host_marks if line.startswith(AGENT_START)]
        boot = Boot(name, outcome, results, started[0] if started else None, [AgentRun(p) for p in runs])
        results_img.unlink()   # sparse but up to 1 GiB; what it held is in boot_dir/runs
        self.boots.append(boot)
        self.log(f"{name}: QEMU ended by {outcome.ended_by} after {outcome.seconds} s, agent started at "
                 f"{boot.agent_seconds} s, {len(boot.runs)} agent run(s)")
        return boot

    def read_root(self, guest_dir: str, dest: Path) -> Path | None:
        """Copy a directory out of the guest's root disk as it is now (the overlay flattened to a temporary
        raw image, read with debugfs); None if the directory is absent."""
        flat = self.disks / "root-flat.img"
        try:
            _run(["qemu-img", "convert", "-O", "raw", str(self.overlay), str(flat)], "qemu-img convert of the root")
            return read_ext4_dir(flat, guest_dir, dest)
        finally:
            flat.unlink(missing_ok=True)
