"""Copy the files kexecfw reads from a live system (or another sysroot) into a snapshot directory.

A snapshot is a sysroot: the same relative paths, so every reader and test runs
on it. proc/kcore is cut after its notes (all a load needs); proc/kallsyms is
cut to the few symbols kexec uses. Without root, /proc/iomem shows zeros and
proc/kcore is unreadable: the snapshot says so instead of pretending.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, PT_NOTE, parse_elf_header
from kexecfw.errors import KexecfwError
from kexecfw.sysroot import Sysroot

FILES = [
    "proc/iomem", "proc/cmdline", "proc/meminfo", "proc/sys/kernel/osrelease",
    "proc/sys/kernel/kexec_load_disabled", "sys/kernel/kexec_loaded", "sys/kernel/kexec_crash_loaded",
    "sys/kernel/kexec_crash_size", "sys/kernel/vmcoreinfo", "sys/kernel/security/lockdown",
    "sys/firmware/fdt", "sys/kernel/boot_params/data", "sys/kernel/boot_params/version",
    "sys/devices/system/cpu/possible", "sys/devices/system/cpu/present", "sys/devices/system/cpu/online",
    "sys/firmware/efi/systab", "sys/firmware/efi/fw_platform_size", "sys/firmware/efi/config_table",
    "sys/firmware/efi/fw_vendor", "sys/firmware/efi/runtime",     # x86_64: EFI state for the next kernel
    # kdump status: whether the kernel updates the crash header on hotplug, and which boot loaded what
    "sys/devices/system/cpu/crash_hotplug", "sys/devices/system/memory/crash_hotplug",
    "proc/sys/kernel/random/boot_id",
]
GLOBS = [
    "sys/devices/system/cpu/cpu[0-9]*/crash_notes", "sys/devices/system/cpu/cpu[0-9]*/crash_notes_size",
    "sys/firmware/memmap/*/start", "sys/firmware/memmap/*/end", "sys/firmware/memmap/*/type",
    "sys/kernel/boot_params/setup_data/*/type", "sys/kernel/boot_params/setup_data/*/data",
    "sys/firmware/efi/runtime-map/*/*",
]
KALLSYMS = {"_text", "_stext", "_etext", "_end", "_sinittext", "_einittext", "__init_begin",
            "__start_rodata", "sys_kexec_file_load", "__arm64_sys_kexec_file_load", "__x64_sys_kexec_file_load"}
KCORE_LIMIT = 1 << 20
META = "kexecfw-snapshot.json"


@dataclass
class SnapshotReport:
    copied: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _copy(src: Path, dst: Path, limit: int | None = None) -> bool:
    try:
        with open(src, "rb") as f:
            data = f.read() if limit is None else f.read(limit)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return True


def _kcore_prefix(path: Path) -> bytes | None:
    """The ELF header, program headers and notes of /proc/kcore (a prefix of the file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
            header = parse_elf_header(head, str(path))
            end = ELF64_EHDR.size + len(header.phdrs) * ELF64_PHDR.size
            for ph in header.phdrs:
                if ph.type == PT_NOTE:
                    end = max(end, ph.offset + ph.filesz)
            end = min(end, KCORE_LIMIT)
            f.seek(0)
            return f.read(end)
    except (OSError, KexecfwError):
        return None


def take_snapshot(source: Sysroot, dest: Path) -> SnapshotReport:
    import datetime  # here, not at the top: every load reads snapshot_metadata, and start-up counts
    import json
    import platform
    report = SnapshotReport()
    if dest.exists() and any(dest.iterdir()):
        raise KexecfwError(f"{dest} exists and is not empty; choose a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    rels = list(FILES)
    for pattern in GLOBS:
        rels.extend(str(p.relative_to(source.root)) for p in sorted(source.root.glob(pattern)))
    for rel in rels:
        (report.copied if _copy(source.path(rel), dest / rel) else report.missing).append(rel)
    kcore = _kcore_prefix(source.path("proc/kcore"))
    if kcore is not None:
        (dest / "proc").mkdir(parents=True, exist_ok=True)
        (dest / "proc/kcore").write_bytes(kcore)
        report.copied.append("proc/kcore")
    else:
        report.missing.append("proc/kcore")
    kallsyms = source.read_optional("proc/kallsyms")
    has_file_load = None
    if kallsyms:
        lines = [ln for ln in kallsyms.splitlines() if len(ln.split()) >= 3 and ln.split()[2] in KALLSYMS]
        if len(kallsyms) > 100_000:
            has_file_load = "kexec_file_load" in kallsyms
        (dest / "proc/kallsyms").write_text("\n".join(lines) + "\n")
        report.copied.append("proc/kallsyms")
    release = (source.read_optional("proc/sys/kernel/osrelease") or "").strip()
    if release and _copy(source.path(f"boot/config-{release}"), dest / f"boot/config-{release}"):
        report.copied.append(f"boot/config-{release}")
    iomem = (dest / "proc/iomem")
    if iomem.exists() and all(ln.split(" : ")[0].strip().strip("0-") == "" for ln in iomem.read_text().splitlines()
                              if " : " in ln):
        report.warnings.append("proc/iomem shows all addresses as 0: not root; run the snapshot as root")
    if "proc/kcore" in report.missing:
        report.warnings.append("proc/kcore could not be read (not root, or no CONFIG_PROC_KCORE): "
                               "the snapshot lacks VMCOREINFO from kcore")
    meta = {"schema": 1, "taken": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": str(source.root), "machine": platform.machine() if source.is_live else None,
            "kernel_has_kexec_file_load": has_file_load, "euid": os.geteuid(),
            "warnings": report.warnings}
    (dest / META).write_text(json.dumps(meta, indent=2) + "\n")
    return report


def snapshot_metadata(sysroot: Sysroot) -> dict:
    """The snapshot's own facts (kexecfw-snapshot.json), or {} (a live system, a bare sysroot)."""
    text = sysroot.read_optional(META)
    if not text:
        return {}
    import json  # here: a load on the live system (no metadata) asks this too, and json costs start-up
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


__all__ = ["take_snapshot", "snapshot_metadata", "SnapshotReport"]


def find_snapshots(*extra: Path) -> dict[str, Path]:
    """Snapshots (sysroots) on this machine, by label: ``$KEXECFW_SNAPSHOTS`` (a ``:``-separated list),
    the lab's results (``lab-results/*/snapshot``), and the real-guest test data of a development checkout."""
    repo = Path(__file__).resolve().parent.parent
    candidates: list[tuple[str, Path]] = [(p.name, p) for p in extra]
    for entry in filter(None, os.environ.get("KEXECFW_SNAPSHOTS", "").split(":")):
        candidates.append((Path(entry).name, Path(entry)))
    for base in {Path.cwd(), repo}:
        for snap in sorted(base.glob("lab-results/*/snapshot")):
            candidates.append((f"lab {snap.parent.name}", snap))
    fixtures = Path(os.environ.get("KEXECFW_FIXTURES", repo / "tests" / "data" / "debian12-guests"))
    for snap in sorted(fixtures.glob("*/sysroot")):
        candidates.append((f"{snap.parent.name} fixture", snap))
    return {label: path for label, path in candidates if (path / "proc" / "iomem").is_file()}
