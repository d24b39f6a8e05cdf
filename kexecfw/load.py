"""The load flow: from a kernel file and options to a validated :class:`Plan`, and from a plan to the kernel.

``plan_load`` is what ``kexecfw load`` and the notebooks call. It resolves
the architecture, asks the plugins (see the order in :mod:`kexecfw.hookspecs`)
and validates the result against the kernel's rules. ``execute_plan`` hands a
plan to the syscall layer; it refuses on any sysroot but the live ``/``.
"""
from __future__ import annotations

import os
import stat     # os imports it anyway

from kexecfw.elfcore import build_elfcorehdr, elfcore_program_headers
from kexecfw.elfnotes import parse_elf_header
from kexecfw.errors import BadInputError, KexecfwError, NoSpaceError
from kexecfw.model import (KEXEC_ON_CRASH, ArchSpec, KernelFile, LoadContext, LoadOptions)
from kexecfw.pluginmanager import Hooks
from kexecfw.segments.plan import Plan
from kexecfw.segments.planner import Planner
from kexecfw.segments.validate import KernelLimits, validate_plan
from kexecfw.sysroot import Sysroot

TYPE_CHECKING = False   # annotations only: a --dry-run does not import ctypes (kexecfw.syscalls), nor a
if TYPE_CHECKING:       # load pathlib (kexecfw.sysroot)
    from pathlib import Path

    from kexecfw.memory.model import MemoryMap
    from kexecfw.syscalls import SyscallLayer


def resolve_arch(hooks: Hooks, sysroot: Sysroot, name: str | None = None) -> ArchSpec:
    """``--arch``, else the ELF machine of the sysroot's proc/kcore, else the host's."""
    if name:
        return hooks.arch(name)
    kcore = sysroot.file("proc/kcore")
    if os.path.isfile(kcore):
        try:
            with open(kcore, "rb") as f:
                header = parse_elf_header(f.read(4096), kcore)
            spec = hooks.arch_for_machine(header.machine)
            if spec is not None:
                return spec
        except (OSError, KexecfwError):
            pass  # unreadable kcore (not root): fall back to the host
    return hooks.arch(os.uname().machine)   # platform.machine(), without importing platform


def discover_memory(sysroot: Sysroot, *, arch: str | None = None,
                    hooks: Hooks | None = None) -> tuple[ArchSpec, "MemoryMap"]:
    """The architecture of ``sysroot`` and its memory map, as a load would see them."""
    hooks = hooks or Hooks()
    spec = resolve_arch(hooks, sysroot, arch)
    ctx = LoadContext(arch=spec, sysroot=sysroot, options=LoadOptions(kernel=""), hooks=hooks)
    return spec, hooks.memory_map(ctx)


def reuse_cmdline(sysroot: Sysroot, panic: bool) -> str:
    """The running kernel's command line without BOOT_IMAGE= (and crashkernel= for a panic load)."""
    import shlex  # here: only --reuse-cmdline needs it
    drop = ("BOOT_IMAGE=",) + (("crashkernel=",) if panic else ())
    words = shlex.split(sysroot.cmdline(), posix=False) if sysroot.cmdline() else []
    return " ".join(w for w in words if not w.startswith(drop))


def read_input(path: str | Path, what: str) -> bytes | memoryview:
    """The whole of a kernel or initrd file: a view of the file, mapped, where it can be.

    The mapping is private (copy-on-write): the page cache's pages become the buffer as they are
    touched, with no copy and no zero-filled pages faulted in first, which is what reading the
    30+ MiB of a kernel and an initrd costs (~0.2 s in a TCG guest); a write would change only this
    process's copy. Plugins still get bytes where they ask for them (``KernelFile.data``). Other
    files (a pipe, an empty file) are read."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > 0 and stat.S_ISREG(st.st_mode):
                import mmap
                return memoryview(mmap.mmap(f.fileno(), st.st_size, mmap.MAP_PRIVATE,
                                            mmap.PROT_READ | mmap.PROT_WRITE))
            return f.read()
    except FileNotFoundError:
        raise BadInputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise BadInputError(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise BadInputError(f"cannot read {what} {path}: permission denied") from None
    except OSError as e:
        raise BadInputError(f"cannot read {what} {path}: {e.strerror or e}") from None


def file_load_requested(ctx: LoadContext) -> bool:
    """kexec_file_load when asked, or by default where the arch and the running kernel have it."""
    arch, opt = ctx.arch, ctx.options.file_load
    if opt is True:
        if arch.nr_kexec_file_load < 0:
            raise KexecfwError(f"{arch.name} has no kexec_file_load; drop --file-load")
        if ctx.options.dtb is not None:
            raise KexecfwError("--dtb cannot apply to kexec_file_load (the kernel builds the DTB itself); "
                               "drop --dtb or use --classic")
        return True
    if opt is False:
        return False
    from kexecfw.syscalls import kernel_has_file_load
    return arch.file_load_default and kernel_has_file_load(ctx.sysroot, arch) is True


def plan_load(options: LoadOptions, sysroot: Sysroot, *, arch: str | None = None,
              hooks: Hooks | None = None) -> tuple[Plan, LoadContext]:
    """Plan and validate a load; no syscall. Returns the plan and the context (log, artifacts)."""
    hooks = hooks or Hooks()
    spec = resolve_arch(hooks, sysroot, arch)
    ctx = LoadContext(arch=spec, sysroot=sysroot, options=options, cmdline=options.cmdline, hooks=hooks)
    plan = hooks.plan_load(ctx)
    hooks.finalize_plan(ctx, plan)
    plan.log = ctx.log
    validate_plan(plan, kernel_limits(ctx))
    return plan, ctx


def kernel_limits(ctx: LoadContext) -> KernelLimits:
    memmap = ctx.memmap if ctx.memmap is not None else ctx.hooks.memory_map(ctx)
    page = ctx.arch.page_size
    ram_bytes = _mem_total(ctx.sysroot) or memmap.ram_size
    return KernelLimits(page_size=page, kexec_arch=ctx.arch.kexec_arch, total_ram_pages=ram_bytes // page,
                        crash_region=memmap.main_crash_region, system_ram=memmap.system_ram)


def _mem_total(sysroot: Sysroot) -> int | None:
    """MemTotal from proc/meminfo: the kernel's totalram_pages, which the half-of-RAM rule uses."""
    text = sysroot.read_optional("proc/meminfo")
    for line in (text or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def discover(ctx: LoadContext) -> None:
    """The first steps of every load plan: the memory map, the crash region check and the kernel
    probe. Fills ``ctx.memmap`` and ``ctx.kernel``; an architecture's own ``kexecfw_plan_load``
    starts with it too."""
    hooks: Hooks = ctx.hooks
    opts = ctx.options
    ctx.memmap = hooks.memory_map(ctx)
    if opts.panic and ctx.memmap.main_crash_region is None:
        raise NoSpaceError("no crash kernel region is reserved: boot the running kernel with crashkernel= "
                           "(e.g. crashkernel=256M) before a panic load")
    data = read_input(opts.kernel, "kernel")
    ctx.kernel = hooks.probe_kernel(ctx, KernelFile(opts.kernel, data))
    if ctx.kernel is None:
        raise BadInputError(f"{opts.kernel} is not a kernel image the {ctx.arch.name} plugin can load "
                            f"(starts with {data[:8].hex()}); is --arch right?")
    ctx.note(f"kernel: {ctx.kernel.format}, {len(ctx.kernel.payload):#x} bytes")


def standard_plan(ctx: LoadContext) -> Plan:
    """The core's load sequence (the default ``kexecfw_plan_load``)."""
    hooks: Hooks = ctx.hooks
    opts = ctx.options
    discover(ctx)
    crash = ctx.memmap.main_crash_region
    initrd = read_input(opts.initrd, "initrd") if opts.initrd else None
    mode = "panic" if opts.panic else "normal"
    flags = ctx.arch.kexec_arch | (KEXEC_ON_CRASH if opts.panic else 0)

    if file_load_requested(ctx):
        ctx.note("kexec_file_load: the kernel builds the segments itself")
        return Plan(ctx.arch.name, mode, "kexec_file_load", 0, flags, ctx.cmdline, crash, [])

    if opts.panic:
        planner = Planner([crash], page_size=ctx.arch.page_size,
                          what=f"the crash region {crash.start:#x}-{crash.last:#x} ({crash.size >> 20} MiB)")
    else:
        planner = Planner(ctx.memmap.usable_ram, page_size=ctx.arch.page_size, what="System RAM")
    kernel_entry = hooks.place_kernel(ctx, planner)
    ctx.note(f"kernel entry {kernel_entry:#x}")
    if initrd is not None:
        hooks.place_initrd(ctx, planner, initrd)
    if opts.panic:
        _add_elfcorehdr(ctx, planner)
    if not hooks.boot_params(ctx, planner, kernel_entry):
        raise KexecfwError(f"the {ctx.arch.name} plugin built no boot parameters (kexecfw_boot_params)")
    entry = _add_purgatory(ctx, planner, kernel_entry)
    return Plan(ctx.arch.name, mode, "kexec_load", entry, flags, ctx.cmdline, crash if opts.panic else None,
                list(planner.segments))


def _add_elfcorehdr(ctx: LoadContext, planner: Planner) -> None:
    info = ctx.hooks.elfcore_info(ctx)
    if info is None:
        raise KexecfwError(f"the {ctx.arch.name} plugin cannot describe a crash dump (kexecfw_elfcore_info)")
    ram = info.ram_ranges if info.ram_ranges is not None else ctx.memmap.crash_dump_ranges
    phdrs = elfcore_program_headers(info, ctx.sysroot, ram)
    hdr = build_elfcorehdr(info.machine, phdrs)
    ctx.artifacts["elfcorehdr_phdrs"] = phdrs
    seg = planner.add("elfcorehdr", hdr, top_down=True)
    ctx.note(f"elfcorehdr: {len(phdrs)} program headers at {seg.mem:#x}")


def _add_purgatory(ctx: LoadContext, planner: Planner, kernel_entry: int) -> int:
    from kexecfw.purgatory import PurgatoryLayout
    obj = ctx.hooks.purgatory(ctx, planner, kernel_entry)
    if obj is None:
        ctx.note("no purgatory: entering the kernel directly")
        return kernel_entry
    layout = PurgatoryLayout(obj.elf, ctx.arch.elf_machine)
    seg = planner.add("purgatory", bytes(layout.size), align=max(obj.align, layout.align),
                      min_addr=obj.min_addr, max_addr=obj.max_addr, top_down=obj.top_down)
    linked = layout.link(seg.mem, ctx.hooks.relocation_types(ctx.arch.elf_machine), obj.entry_symbol)
    for name, value in obj.symbols.items():
        linked.patch(name, value)
    others = [s for s in planner.segments if s is not seg]
    linked.fill_sha256(others, skip=ctx.options.skip_sha256)
    planner.replace(seg, bytes(linked.image))
    ctx.artifacts["purgatory"] = linked
    ctx.note(f"purgatory at {seg.mem:#x}, entry {linked.entry:#x}, {len(linked.relocations)} relocations"
             + (", sha256 check skipped" if ctx.options.skip_sha256 else f", sha256 over {len(others)} segments"))
    return linked.entry


def execute_plan(plan: Plan, ctx: LoadContext, layer: "SyscallLayer | None" = None) -> None:
    """Load ``plan`` into the running kernel. Only on the live system."""
    from kexecfw.syscalls import current_layer
    if not ctx.sysroot.is_live:
        raise KexecfwError(f"refusing to load into the running kernel with --sysroot {ctx.sysroot.root_dir}: "
                           "a snapshot is for --dry-run only")
    layer = layer or current_layer(ctx.arch)
    if plan.syscall == "kexec_file_load":
        opts = ctx.options
        kernel_fd = os.open(opts.kernel, os.O_RDONLY)
        initrd_fd = os.open(opts.initrd, os.O_RDONLY) if opts.initrd else -1
        try:
            layer.kexec_file_load(kernel_fd, initrd_fd, plan.cmdline, panic=plan.mode == "panic")
        finally:
            os.close(kernel_fd)
            if initrd_fd >= 0:
                os.close(initrd_fd)
    else:
        layer.kexec_load(plan.entry, plan.segments, plan.flags)

