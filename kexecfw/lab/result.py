"""What a lab run brought back, phase by phase, and the readers tests and notebooks use on it.

A results directory holds ``result.json`` (this module's :class:`LabResult`),
``timings.json``, ``console.log`` and what the guest wrote: ``snapshot/``,
``plan/``, ``dryrun.json``, ``first/`` (the first kernel's steps and marks),
``capture/`` (the capture kernel's view and its steps), ``dump/``, ``second/``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kexecfw.errors import BadInputError

if TYPE_CHECKING:
    from kexecfw.elfnotes import ElfCoreHeader, Note

SCHEMA = 1


@dataclass
class Step:
    """One command the guest ran: exit code, guest uptime at start and end, the end of its stderr."""

    role: str
    name: str
    rc: int
    start: float
    end: float
    stderr_tail: str = ""

    @property
    def seconds(self) -> float:
        return round(self.end - self.start, 3)


@dataclass
class Phase:
    name: str
    ok: bool
    required: bool
    seconds: float | None = None
    detail: str = ""


@dataclass
class LabResult:
    directory: Path
    arch: str
    scenario: str
    loader: str
    generation: str
    kernel_release: str
    ok: bool = False
    failure: str | None = None
    phases: list[Phase] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    qemu_seconds: float | None = None
    ended_by: str | None = None
    settings: dict = field(default_factory=dict)

    # --- persistence ------------------------------------------------------------------

    def to_json(self) -> dict:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return {"schema": SCHEMA, **data}

    def save(self) -> None:
        (self.directory / "result.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> LabResult:
        path = Path(directory) / "result.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BadInputError(f"{path} is not a lab result ({e}): run `kexecfw lab run` first") from None
        data.pop("schema", None)
        data["directory"] = Path(directory)
        data["phases"] = [Phase(**p) for p in data.get("phases", [])]
        data["steps"] = [Step(**s) for s in data.get("steps", [])]
        return cls(**data)

    def excerpt(self, dest: str | Path, files: list[str]) -> LabResult:
        """``files`` of this run (those it has) copied under ``dest`` beside its result.json: a recorded
        run small enough to commit, which :meth:`load` reads like the whole run (notebooks and tests
        without a guest). The console's tail is left out of the notes."""
        import shutil
        dest = Path(dest)
        for rel in files:
            if self.path(rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path(rel), dest / rel)
        recorded = replace(self, directory=dest, notes=[n for n in self.notes if not n.startswith("console tail")])
        recorded.save()
        return recorded

    # --- lookups ----------------------------------------------------------------------

    def step(self, name: str, role: str | None = None) -> Step | None:
        for s in self.steps:
            if s.name == name and (role is None or s.role == role):
                return s
        return None

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def path(self, rel: str) -> Path:
        return self.directory / rel

    def read_text(self, rel: str) -> str | None:
        p = self.path(rel)
        return p.read_text(errors="replace") if p.is_file() else None

    def vmcore_headers(self) -> tuple[ElfCoreHeader, list[Note]]:
        """ELF header, program headers and notes of the capture kernel's /proc/vmcore."""
        from kexecfw.elfnotes import read_core_notes
        p = self.path("capture/vmcore-hdr+notes.bin")
        if not p.is_file():
            raise BadInputError(f"{p} is missing: the capture kernel did not save its /proc/vmcore headers")
        return read_core_notes(p.read_bytes(), str(p))

    def vmcore_size(self) -> int | None:
        text = self.read_text("capture/vmcore-size")
        return int(text) if text and text.strip().isdigit() else None

    def crashed_dmesg(self) -> str | None:
        """The crashed kernel's log as read in the capture kernel (Debian's vmcore-dmesg)."""
        return self.read_text("capture/vmcore-dmesg.txt")

    def dump_measurements(self) -> dict[str, dict]:
        """Measured dumps (lab run --measure-dumps / --fill-memory), by step name: rc, seconds,
        max_rss_kib, output_bytes, command (guest.py measure in the capture kernel)."""
        out = {}
        for p in sorted(self.path("capture/steps").glob("*.measure")):
            try:
                out[p.stem] = json.loads(p.read_text())
            except ValueError:
                continue
        return out

    def fill_report(self) -> dict | None:
        """What the first kernel filled before the crash (lab run --fill-memory)."""
        text = self.read_text("first/fill.json")
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    def marker(self) -> str | None:
        text = self.read_text("first/marker")
        return text.strip() if text else None

    # --- the human view ---------------------------------------------------------------

    def summary(self) -> str:
        lines = [f"kexecfw lab: {self.arch} {self.scenario} (loader {self.loader}, kernel {self.kernel_release}, "
                 f"generation {self.generation}): {'OK' if self.ok else 'FAILED'}"]
        if self.failure:
            lines.append(f"  failure: {self.failure}")
        lines.append("  phases:")
        for p in self.phases:
            secs = f"{p.seconds:7.2f}s" if p.seconds is not None else "        "
            flag = "ok  " if p.ok else ("FAIL" if p.required else "fail")
            lines.append(f"    {flag} {secs}  {p.name}" + (f"  - {p.detail}" if p.detail else ""))
        plan = self._plan_lines()
        if plan:
            lines.append("  plan:")
            lines += [f"    {ln}" for ln in plan]
        view = self._capture_lines()
        if view:
            lines.append("  capture kernel's view:")
            lines += [f"    {ln}" for ln in view]
        dmesg = self.crashed_dmesg()
        if dmesg:
            lines += self._crash_lines(dmesg)
        dumps = sorted(self.path("dump").glob("*")) if self.path("dump").is_dir() else []
        for d in dumps:
            lines.append(f"  dump: {d.name} {d.stat().st_size / (1 << 20):.1f} MiB")
        fill = self.fill_report()
        if fill:
            lines.append(f"  filled before the crash: {fill.get('anon_mib')} MiB anonymous in "
                         f"{fill.get('anon_seconds')} s, {fill.get('page_cache_mib')} MiB page cache in "
                         f"{fill.get('page_cache_seconds')} s")
        for name, m in self.dump_measurements().items():
            size = m.get("output_bytes")
            lines.append(f"  measured {name}: rc {m.get('rc')}, {m.get('seconds')} s, peak RSS "
                         f"{m.get('max_rss_kib', 0) / 1024:.1f} MiB, output "
                         + (f"{size / (1 << 20):.1f} MiB" if size is not None else "none"))
        for n in self.notes:
            lines.append(f"  note: {n}")
        lines.append(f"  results: {self.directory}")
        return "\n".join(lines)

    def _crash_lines(self, dmesg: str) -> list[str]:
        """Why the crashed kernel died (its panic line, CPU and task, what led to it), from its log."""
        from kexecfw.vmcore.prstatus import panic_report
        report = panic_report(dmesg)
        where = f"(whole log: {self.path('capture/vmcore-dmesg.txt')})"
        if report is None:
            return [f"  crash: no panic or oops line in the crashed kernel's log {where}"]
        out = [f"  crash: {report.line}"]
        if report.task():
            out.append(f"    on {report.task()}")
        out += [f"    after: {ln}" for ln in report.lead]
        out.append(f"    {where}")
        return out

    def _plan_lines(self) -> list[str]:
        plan_json = self.path("plan/plan.json")
        if plan_json.is_file():
            try:
                plan = json.loads(plan_json.read_text())
                segs = plan.get("segments", [])
                out = [f"entry {plan.get('entry')}  {len(segs)} segments"]
                for s in segs:
                    out.append(f"{s.get('name', '?'):12} mem {s.get('mem')} memsz {s.get('memsz')} "
                               f"bufsz {s.get('bufsz', s.get('size', '?'))}")
                return out
            except (ValueError, AttributeError):
                return ["plan/plan.json is not valid JSON"]
        debug = self.read_text("first/steps/load.out") or ""
        segs = [ln.strip() for ln in debug.splitlines() if ln.startswith(("segment[", "entry"))]
        return segs[-12:]

    def _capture_lines(self) -> list[str]:
        out = []
        cmdline = self.read_text("capture/cmdline")
        if cmdline:
            out.append(f"cmdline: {cmdline.strip()}")
        for prop in ("linux,elfcorehdr", "linux,usable-memory-range"):
            p = self.path(f"capture/chosen/{prop}")
            if p.is_file():
                cells = p.read_bytes()
                words = [int.from_bytes(cells[i:i + 8], "big") for i in range(0, len(cells) - 7, 8)]
                out.append(f"/chosen {prop}: " + " ".join(f"{w:#x}" for w in words))
        size = self.vmcore_size()
        if size is not None:
            out.append(f"/proc/vmcore: {size} bytes ({size / (1 << 20):.0f} MiB)")
        try:
            header, notes = self.vmcore_headers()
        except BadInputError:
            return out
        loads = [p for p in header.phdrs if p.type == 1]
        out.append(f"{len(loads)} PT_LOAD, {len(notes)} notes: "
                   + ", ".join(sorted({f'{n.name.decode(errors="replace")}/{n.type}' for n in notes})))
        for p in loads:
            out.append(f"PT_LOAD paddr {p.paddr:#x}-{p.paddr + p.memsz - 1:#x} vaddr {p.vaddr:#x}")
        return out
