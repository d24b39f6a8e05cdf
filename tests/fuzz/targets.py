"""Fuzz targets: one per parser and one per whole CLI command.

A target takes a mutated input (a file or a directory) and calls the real parser or command. It
returns normally when the input was handled; a KexecfwError with a one-line message is a clean
rejection. Anything else is a finding: another exception, a multi-line message, or for the CLI
targets a traceback, extra stderr lines, an unknown exit code, a timeout, or a damaged dump saved
under its final name (:class:`Finding`). No target ever loads a kernel: load plans are made with
``plan_load`` or ``load --dry-run --sysroot`` only.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kexecfw.errors import ExitCode, KexecfwError

REPO = Path(__file__).resolve().parents[2]
EXIT_CODES = {v for k, v in vars(ExitCode).items() if k.isupper()}
EM = {"arm64": 183, "x86_64": 62}
DUMP_KINDS = ("elf-dump", "kdump", "flat", "split")


class Finding(Exception):
    """Something a target saw that is not an exception of the code under test (a CLI traceback,
    a damaged dump saved as complete...). ``kind`` and ``where`` de-duplicate it."""

    def __init__(self, kind: str, where: str, detail: str) -> None:
        super().__init__(f"{kind} at {where}: {detail}")
        self.kind, self.where, self.detail = kind, where, detail


@dataclass
class Context:
    """What a target may use besides its input: a scratch directory, the seeds, a per-worker cache,
    the time limit of one input, and the input's index (to vary options deterministically)."""

    scratch: Path
    seeds: dict
    cache: dict
    time_limit: float
    index: int = 0
    rejections: list = field(default_factory=list)


def attempt(ctx: Context, fn: Callable, *args):
    """Run one step; a KexecfwError is a clean rejection (recorded, the next step still runs) if its
    message is one line."""
    try:
        return fn(*args)
    except KexecfwError as e:
        msg = e.message
        if "\n" in msg or not msg.strip():
            raise Finding("multi-line or empty KexecfwError", type(e).__name__, repr(msg[:200])) from None
        ctx.rejections.append(f"{type(e).__name__}: {msg}")
        return None


# --- dumps in process ---------------------------------------------------------------------------

def _dump_paths(path: Path):
    return sorted(str(p) for p in path.iterdir()) if path.is_dir() else str(path)


def exercise_dump(path: Path, ctx: Context) -> None:
    """Everything the readers do with a dump: open, info, notes with CPUs, memory, dmesg."""
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.dmesg import dmesg_bytes, records
    from kexecfw.vmcore.kmem import KernelMemory, kernel_layout
    from kexecfw.vmcore.prstatus import describe_cpus
    dump = attempt(ctx, open_dump, _dump_paths(path))
    if dump is None:
        return
    with dump:
        attempt(ctx, lambda: dump.vmcoreinfo.typed())
        attempt(ctx, dump.missing_memory)
        attempt(ctx, lambda: (dump.ranges(), dump.max_pfn(), list(dump.iter_present_pfns())))
        mem = attempt(ctx, KernelMemory, dump)
        log = None
        if mem is not None:
            attempt(ctx, mem.utsname)
            attempt(ctx, kernel_layout, mem)
            log = attempt(ctx, dmesg_bytes, mem)
            attempt(ctx, lambda: list(records(mem)))
        attempt(ctx, describe_cpus, dump, [0, 1, 2, 3] if ctx.index % 2 else None, log, True)


ZERO = b"zero"


def _pages(path) -> dict[int, bytes]:
    """pfn -> digest of every page a dump holds (ZERO for an all-zero page)."""
    from kexecfw.vmcore import open_dump
    out = {}
    with open_dump(path) as d:
        ps = d.page_size
        for r in d.ranges():
            for pfn in range(r.start // ps, r.end // ps):
                page = d.read_phys(pfn * ps, ps)
                out[pfn] = ZERO if page.count(0) == ps else hashlib.blake2b(page, digest_size=16).digest()
    return out


def _claimed_pfns(paths) -> set[int]:
    """The pages a (damaged) dump's own headers or bitmaps say it holds, read or not."""
    from kexecfw.vmcore import open_dump
    with open_dump(paths) as d:
        ps = d.page_size
        return {pfn for r in d.ranges() for pfn in range(r.start // ps, r.end // ps)}


def check_saved_copy(out: str, seed, ctx: Context, save: Callable[[str, str], None], what: str,
                     damaged) -> None:
    """``out`` was saved under its final name from ``damaged``, a damaged copy of ``seed`` (cut short,
    page data or descriptors changed): a page the seed's own save holds and the damaged copy still
    claims must not be missing from it or read as zeros, else data was lost and the dump must not be
    called complete. (Pages whose headers the damage removed — a smaller e_phnum — are no longer
    claimed: no reader can know of them. Changed page contents are not counted either: a damaged
    page stored uncompressed cannot be told from a good one.)"""
    key = ("saved", seed.id, what)
    if key not in ctx.cache:
        ref = str(ctx.scratch.parent / f"ref-{seed.id}-{what.replace(' ', '-').replace('.', '-')}")
        if not os.path.exists(ref):
            save(_dump_paths(Path(seed.path)), ref)
        ctx.cache[key] = _pages(ref)
    want = ctx.cache[key]
    try:
        got = _pages(out)
    except KexecfwError as e:
        raise Finding("damaged dump saved as complete", what, f"the complete-named output does not open: "
                      f"{e.message}") from None
    claimed = _claimed_pfns(damaged)
    lost = [pfn for pfn, h in want.items() if h != ZERO and pfn in claimed and got.get(pfn, ZERO) == ZERO]
    if lost:
        raise Finding("damaged dump saved as complete", what,
                      f"{len(lost)} of {len(want)} pages lost (missing or zero; first pfn {lost[0]:#x})")


def _save_in_process(paths, out: str) -> None:
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.writer import DumpWriter
    with open_dump(paths) as dump:
        DumpWriter(dump, 31, "zlib", threads=1).write(out)


def save_dump(path: Path, ctx: Context, seed, lossy: bool) -> None:
    out = str(ctx.scratch / "saved.kdump")
    done = attempt(ctx, lambda: _save_in_process(_dump_paths(path), out) or True)
    if done and lossy:
        check_saved_copy(out, seed, ctx, _save_in_process, "DumpWriter.write", _dump_paths(path))


# --- parsers in process ---------------------------------------------------------------------------

def core_notes(path: Path, ctx: Context, seed) -> None:
    from kexecfw.elfnotes import NT_PRSTATUS, read_core_notes
    from kexecfw.pluginmanager import Hooks
    from kexecfw.vmcore.prstatus import parse_prstatus
    from kexecfw.vmcoreinfo import VmcoreInfo
    res = attempt(ctx, read_core_notes, path.read_bytes(), str(path))
    if res is None:
        return
    _, notes = res
    names = Hooks().prstatus_registers(EM[seed.arch])
    for i, n in enumerate(x for x in notes if x.type == NT_PRSTATUS and x.name == b"CORE"):
        attempt(ctx, parse_prstatus, n, i, names)
    for n in notes:
        if n.name == b"VMCOREINFO":
            info = attempt(ctx, VmcoreInfo.parse, n.desc)
            if info is not None:
                attempt(ctx, info.typed)


def vmcoreinfo(path: Path, ctx: Context, seed) -> None:
    from kexecfw.vmcore.kmem import translator_for
    from kexecfw.vmcoreinfo import VmcoreInfo
    info = attempt(ctx, VmcoreInfo.parse, path.read_bytes())
    if info is None:
        return
    attempt(ctx, info.typed)
    for getter in ("page_size", "kernel_offset", "crash_time", "build_id", "osrelease"):
        attempt(ctx, getattr, info, getter)
    attempt(ctx, translator_for, EM[seed.arch], info)


def iomem(path: Path, ctx: Context, seed) -> None:
    from kexecfw.memory.iomem import parse_iomem
    mm = attempt(ctx, parse_iomem, path.read_bytes().decode("utf-8", "replace"), str(path))
    if mm is not None:
        attempt(ctx, lambda: (mm.system_ram, mm.usable_ram, mm.crash_regions, mm.main_crash_region,
                              mm.kernel_code, mm.crash_dump_ranges, mm.ram_size, mm.to_json()))


def firmware_memmap(path: Path, ctx: Context, seed) -> None:
    from kexecfw.plugins.x86_64.e820 import normal_e820
    from kexecfw.plugins.x86_64.memmap import read_firmware_memmap
    from kexecfw.sysroot import Sysroot
    regions = attempt(ctx, read_firmware_memmap, Sysroot(path))
    if regions:
        attempt(ctx, normal_e820, regions)


def dtb(path: Path, ctx: Context, seed) -> None:
    from kexecfw.memory.devicetree import DeviceTree
    tree = attempt(ctx, DeviceTree.from_bytes, path.read_bytes(), str(path))
    if tree is None:
        return
    attempt(ctx, lambda: list(tree.walk()))
    attempt(ctx, tree.memory_ranges)
    attempt(ctx, tree.reserved_ranges)
    attempt(ctx, tree.cells, "/")
    attempt(ctx, tree.get_ranges, "/chosen", "linux,usable-memory-range")
    attempt(ctx, tree.get_ranges, "/chosen", "linux,elfcorehdr")
    attempt(ctx, tree.get_u32, "/chosen", "linux,initrd-start")
    attempt(ctx, tree.to_bytes)


def arm64_image(path: Path, ctx: Context, seed) -> None:
    from kexecfw.plugins.arm64.image import check_loadable, is_uki, unwrap
    data = path.read_bytes()
    attempt(ctx, is_uki, data)
    probed = attempt(ctx, unwrap, data, str(path))
    if probed is not None:
        attempt(ctx, check_loadable, probed.header, str(path), 4096)


def x86_bzimage(path: Path, ctx: Context, seed) -> None:
    from kexecfw.plugins.x86_64.bzimage import parse_bzimage
    from kexecfw.plugins.x86_64.payload import decompress_payload, embedded_purgatory
    image = attempt(ctx, parse_bzimage, path.read_bytes(), str(path))
    if image is None:
        return
    attempt(ctx, image.details)
    vmlinux = attempt(ctx, decompress_payload, image)
    if vmlinux is not None:
        attempt(ctx, embedded_purgatory, vmlinux)


def crashkernel_parse(path: Path, ctx: Context, seed) -> None:
    from kexecfw.crashkernel import parse
    text = path.read_bytes().decode("utf-8", "replace")
    for ram, arch in ((2 << 30, "x86_64"), (64 << 30, "arm64"), (1 << 50, "x86_64")):
        res = attempt(ctx, parse, text, ram, arch)
        if res is not None:
            attempt(ctx, res.as_dict)


def _estimate_inputs(path: Path, ctx: Context, seed) -> tuple[str, str]:
    """For estimate: the mutated input in its place (kernel or initrd), the other one clean."""
    kernel, initrd = ctx.seeds["x86_64-bzimage"].path, ctx.seeds["initrd-gzip"].path
    return (kernel, str(path)) if seed.kind == "initrd" else (str(path), initrd)


def crashkernel_estimate(path: Path, ctx: Context, seed) -> None:
    from kexecfw.crashkernel import estimate
    kernel, initrd = _estimate_inputs(path, ctx, seed)
    attempt(ctx, estimate, kernel, initrd, 1 + ctx.index % 4, 2 << 30)


def purgatory_link(path: Path, ctx: Context, seed) -> None:
    from kexecfw.pluginmanager import Hooks
    from kexecfw.purgatory import PurgatoryLayout
    layout = attempt(ctx, PurgatoryLayout, path.read_bytes(), EM[seed.arch])
    if layout is None:
        return
    types = Hooks().relocation_types(EM[seed.arch])
    linked = attempt(ctx, layout.link, 0x7F000000, types, "purgatory_start")
    if linked is not None:
        attempt(ctx, linked.patch, "purgatory_kernel_entry", (0x40200000).to_bytes(8, "little"))


KERNEL_FOR = {"arm64": "arm64-image", "x86_64": "x86_64-bzimage"}
CMDLINE = "console=ttyS0 reset_devices irqpoll maxcpus=1"


def _plan(kernel: str, sysroot: str, arch: str, panic: bool, initrd: str) -> None:
    from kexecfw.load import plan_load
    from kexecfw.model import LoadOptions
    from kexecfw.sysroot import Sysroot
    opts = LoadOptions(kernel=Path(kernel), initrd=Path(initrd), cmdline=CMDLINE, panic=panic, file_load=False)
    plan_load(opts, Sysroot(Path(sysroot)), arch=arch)


def load_sysroot(path: Path, ctx: Context, seed) -> None:
    """A whole load plan (no syscall) on a mutated snapshot."""
    attempt(ctx, _plan, ctx.seeds[KERNEL_FOR[seed.arch]].path, str(path), seed.arch, ctx.index % 3 != 0,
            ctx.seeds["initrd-gzip"].path)


def load_kernel(path: Path, ctx: Context, seed) -> None:
    """A whole load plan (no syscall) of a mutated kernel image on the real snapshot."""
    attempt(ctx, _plan, str(path), ctx.seeds[f"{seed.arch}-sysroot"].path, seed.arch, ctx.index % 2 == 0,
            ctx.seeds["initrd-gzip"].path)


# --- whole commands -------------------------------------------------------------------------------

TRACE_LINE = re.compile(r'File "([^"]+)", line (\d+)')
EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|error|Warning)?)(?::|$)")


def run_cli(args: list[str], ctx: Context) -> subprocess.CompletedProcess:
    """``python -m kexecfw ARGS``; a traceback, more than one stderr line that is not a warning, an exit
    code kexecfw does not define, or a timeout is a finding."""
    try:
        proc = subprocess.run([sys.executable, "-m", "kexecfw", *args], capture_output=True, text=True,
                              errors="replace", timeout=ctx.time_limit, cwd=ctx.scratch,
                              env={**os.environ, "COLUMNS": "100", "KEXECFW_VMCORE": "/nonexistent"})
    except subprocess.TimeoutExpired:
        raise Finding("timeout", f"kexecfw {args[0]} {args[1] if len(args) > 1 else ''}".strip(),
                      f"no answer in {ctx.time_limit:.0f} s") from None
    err = proc.stderr
    if "Traceback (most recent call last)" in err:
        frames = TRACE_LINE.findall(err)
        ours = [f for f in frames if "/kexecfw/" in f[0] or "/plugins/" in f[0]]
        where = ours[-1] if ours else (frames[-1] if frames else ("?", "0"))
        last = [ln for ln in err.strip().splitlines() if ln and not ln.startswith(" ")]
        exc_line = last[-1] if last else "?"
        m = EXC_LINE.match(exc_line)
        raise Finding(m[1] if m else "traceback", _short(where[0]) + ":" + where[1], exc_line[:200])
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("kexecfw: warning:")]
    if len(lines) > 1:
        raise Finding("more than one stderr line", f"kexecfw {' '.join(a for a in args[:2] if not a.startswith('/'))}",
                      " | ".join(lines[:3])[:200])
    if proc.returncode not in EXIT_CODES:
        raise Finding(f"exit code {proc.returncode}", f"kexecfw {args[0]}", err.strip()[:200])
    if proc.returncode != 0 and lines:
        ctx.rejections.append(lines[0])
    return proc


def _short(path: str) -> str:
    p = path.replace(str(REPO) + "/", "")
    i = p.find("kexecfw/")
    return p[i:] if i >= 0 and not p.startswith("plugins/") else p


def _dump_args(path: Path) -> list[str]:
    p = _dump_paths(path)
    return p if isinstance(p, list) else [p]


def cli_vmcore_info(path: Path, ctx: Context, seed) -> None:
    run_cli(["vmcore", "info", *(["--json"] if ctx.index % 2 else []), *_dump_args(path)], ctx)


def cli_vmcore_notes(path: Path, ctx: Context, seed) -> None:
    extra = [[], ["--all"], ["--online-cpus", "0-3"], ["--no-symbols", "--json"]][ctx.index % 4]
    run_cli(["vmcore", "notes", *extra, *_dump_args(path)], ctx)


def cli_vmcore_dmesg(path: Path, ctx: Context, seed) -> None:
    extra = [[], ["--json"], ["--makedumpfile"], ["--level", "--caller"]][ctx.index % 4]
    run_cli(["vmcore", "dmesg", *extra, *_dump_args(path)], ctx)


def _save_cli(paths, out: str) -> None:
    inputs = [a for p in (paths if isinstance(paths, list) else [paths]) for a in ("-i", p)]
    proc = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "--threads", "1", *inputs, out],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the seed does not save: {proc.stderr.strip()}")


def cli_vmcore_save(path: Path, ctx: Context, seed, lossy: bool) -> None:
    out = ctx.scratch / "out.kdump"
    inputs = [a for p in _dump_args(path) for a in ("-i", p)]
    proc = run_cli(["vmcore", "save", "--threads", "1", *inputs, str(out)], ctx)
    if out.exists() and proc.returncode != 0:
        raise Finding("final name left by a failed save", "kexecfw vmcore save",
                      f"exit {proc.returncode} but {out.name} exists: {proc.stderr.strip()[:150]}")
    if proc.returncode == 0 and not out.exists():
        raise Finding("save succeeded without output", "kexecfw vmcore save", proc.stderr.strip()[:150])
    if proc.returncode == 0 and lossy:
        check_saved_copy(str(out), seed, ctx, _save_cli, "kexecfw vmcore save", _dump_paths(path))


def cli_crashkernel_parse(path: Path, ctx: Context, seed) -> None:
    ram = ["2G", "64G", "1536M", "16E"][ctx.index % 4]
    run_cli(["crashkernel", "parse", path.read_bytes().decode("utf-8", "replace").replace("\0", ""), "--ram", ram,
             *(["--json"] if ctx.index % 2 else [])], ctx)


def cli_crashkernel_estimate(path: Path, ctx: Context, seed) -> None:
    kernel, initrd = _estimate_inputs(path, ctx, seed)
    run_cli(["crashkernel", "estimate", "--kernel", kernel, "--initrd", initrd, "--cpus", str(1 + ctx.index % 4),
             "--ram", "4G"], ctx)


def cli_load_dry_run(path: Path, ctx: Context, seed) -> None:
    """``load --dry-run`` (never a real load) on a mutated snapshot or with a mutated kernel."""
    if seed.kind == "sysroot":
        root, kernel, arch = str(path), ctx.seeds[KERNEL_FOR[seed.arch]].path, seed.arch
    else:
        root, kernel, arch = ctx.seeds[f"{seed.arch}-sysroot"].path, str(path), seed.arch
    panic = ["-p"] if ctx.index % 3 else []
    args = ["--sysroot", root, "--arch", arch, "load", *panic, "--dry-run", "--classic", kernel,
            "--initrd", ctx.seeds["initrd-gzip"].path, "--append", CMDLINE]
    assert "--dry-run" in args and "--sysroot" in args      # never a real load
    run_cli(args, ctx)


@dataclass
class Target:
    name: str
    kinds: tuple[str, ...]          # seed kinds it takes
    run: Callable
    cli: bool = False
    wants_lossy: bool = False   # run(path, ctx, seed, lossy)
    seed_ids: tuple[str, ...] = ()  # restrict to these seeds (else every seed of the kinds)


def _dump(path, ctx, seed):
    exercise_dump(path, ctx)


TARGETS = [
    Target("dump-elf", ("elf-dump",), _dump),
    Target("dump-kdump", ("kdump",), _dump),
    Target("dump-flattened", ("flat",), _dump),
    Target("dump-split", ("split",), _dump),
    Target("dump-save", DUMP_KINDS, save_dump, wants_lossy=True),
    Target("elf-notes", ("core-notes",), core_notes),
    Target("vmcoreinfo", ("vmcoreinfo",), vmcoreinfo),
    Target("iomem", ("iomem",), iomem),
    Target("firmware-memmap", ("memmap",), firmware_memmap),
    Target("dtb", ("dtb",), dtb),
    Target("arm64-image", ("arm64-image",), arm64_image),
    Target("x86-bzimage", ("bzimage",), x86_bzimage),
    Target("crashkernel-parse", ("crashkernel",), crashkernel_parse),
    Target("crashkernel-estimate", ("initrd", "arm64-image", "bzimage"), crashkernel_estimate),
    Target("purgatory-link", ("purgatory",), purgatory_link),
    Target("load-sysroot", ("sysroot",), load_sysroot),
    Target("load-kernel", ("arm64-image", "bzimage"), load_kernel),
    Target("cli-vmcore-info", DUMP_KINDS, cli_vmcore_info, cli=True),
    Target("cli-vmcore-notes", DUMP_KINDS, cli_vmcore_notes, cli=True),
    Target("cli-vmcore-dmesg", DUMP_KINDS, cli_vmcore_dmesg, cli=True),
    Target("cli-vmcore-save", DUMP_KINDS, cli_vmcore_save, cli=True, wants_lossy=True),
    Target("cli-crashkernel-parse", ("crashkernel",), cli_crashkernel_parse, cli=True),
    Target("cli-crashkernel-estimate", ("initrd", "arm64-image", "bzimage"), cli_crashkernel_estimate, cli=True),
    Target("cli-load-dry-run", ("sysroot", "arm64-image", "bzimage"), cli_load_dry_run, cli=True),
]
BY_NAME = {t.name: t for t in TARGETS}


def seeds_for(target: Target, seeds: list) -> list:
    return [s for s in seeds if s.kind in target.kinds and (not target.seed_ids or s.id in target.seed_ids)]
