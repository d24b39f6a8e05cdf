"""``kexecfw load``: like ``kexec -l`` / ``kexec -p``, with --dry-run, --json and --save-segments."""
from __future__ import annotations

from kexecfw.cli.options import Option, add_options, parse_plain

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: see kexecfw.cli's start-up note
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from kexecfw.model import LoadContext, LoadOptions
    from kexecfw.segments.plan import Plan
    from kexecfw.sysroot import Sysroot

POSITIONALS = (("kernel", "KERNEL", "kernel image (arm64 Image/Image.gz/vmlinux, x86 bzImage)"),)
OPTIONS = (
    Option(("-p", "--panic"), "panic", "load as the crash kernel (kexec -p)"),
    Option(("--initrd", "--ramdisk"), "initrd", "initrd/initramfs for the new kernel", metavar="FILE"),
    Option(("--append",), "append", "command line for the new kernel", metavar="S", group="cmdline"),
    Option(("--command-line",), "append", "same as --append", metavar="S", group="cmdline"),
    Option(("--reuse-cmdline",), "reuse_cmdline",
           "start from the running kernel's command line (drops BOOT_IMAGE=, and crashkernel= with -p)"),
    Option(("--dtb",), "dtb", "device tree to start from instead of /sys/firmware/fdt", metavar="FILE"),
    Option(("--file-load", "-s"), "file_load", "use kexec_file_load", const=True, group="mode"),
    Option(("--classic", "-c"), "file_load", "use kexec_load even where kexec_file_load is the default",
           const=False, group="mode"),
    Option(("--skip-sha256",), "skip_sha256", "purgatory skips the sha256 check of the segments"),
    Option(("--dry-run", "-n"), "dry_run", "plan and validate only; no syscall"),
    Option(("--json",), "json", "print the plan as JSON"),
    Option(("--save-segments",), "save_segments", "write plan.json and each segment's buffer to DIR",
           metavar="DIR"),
    Option(("--plot",), "plot", "draw the plan over the memory map into PNG", metavar="PNG"),
    Option(("-v", "--verbose"), "verbose", "print the planner's decisions"),
)


def configure(p: argparse.ArgumentParser) -> None:
    add_options(p, POSITIONALS, OPTIONS)


def parse_fast(words: Sequence[str]) -> dict[str, object] | None:
    """The command's values for ``words`` (after ``load``) when argparse is not needed (kexecfw.cli.options)."""
    return parse_plain(words, POSITIONALS, OPTIONS)


def build_options(args: argparse.Namespace, sysroot: "Sysroot") -> "LoadOptions":
    from kexecfw.load import reuse_cmdline
    from kexecfw.model import LoadOptions
    parts = []
    if args.reuse_cmdline:
        parts.append(reuse_cmdline(sysroot, args.panic))
    if args.append:
        parts.append(args.append)
    # str paths, not pathlib's (kexecfw.sysroot says why)
    return LoadOptions(kernel=args.kernel, initrd=args.initrd or None,
                       cmdline=" ".join(p for p in parts if p), panic=args.panic,
                       dtb=args.dtb or None, file_load=args.file_load,
                       skip_sha256=args.skip_sha256)


def run(args: argparse.Namespace) -> int:
    import sys

    from kexecfw.cli.common import print_json, require_live_root, sysroot_of
    from kexecfw.errors import KexecfwError
    from kexecfw.load import execute_plan, plan_load

    sysroot = sysroot_of(args)
    if not args.dry_run:
        require_live_root(sysroot, "load a kernel")
    plan, ctx = plan_load(build_options(args, sysroot), sysroot, arch=args.arch)
    if args.save_segments:
        save_segments(plan, args.save_segments)
    if args.plot:
        from kexecfw.viz.render import save_plan_plot
        save_plan_plot(plan, ctx.memmap, args.plot)
    if args.json:
        print_json(plan.to_json())
    else:
        # The segments' digests cost a pass over every buffer (the initrd's tens of MiB), on top of
        # the purgatory's: a real load shows them only with -v; --dry-run is for looking.
        print(format_plan(plan, ctx, digests=args.dry_run or args.verbose))
        if args.verbose:
            for line in plan.log:
                print(f"  - {line}")
    if args.dry_run:
        return 0
    try:
        execute_plan(plan, ctx)
    except KexecfwError:
        raise
    print(f"kexecfw: {'crash kernel' if args.panic else 'kernel'} loaded", file=sys.stderr)
    return 0


def save_segments(plan: "Plan", directory: str) -> None:
    import json
    from pathlib import Path
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    for i, seg in enumerate(plan.segments):
        (out / f"{i:02d}-{seg.name}.bin").write_bytes(seg.buf)


def format_plan(plan: "Plan", ctx: "LoadContext", *, digests: bool = True) -> str:
    """The plan as text: mode, entry, command line, the segments (with their sha256 when ``digests``)
    and the memory map around them."""
    from kexecfw.cli.common import human_size
    if digests:
        from kexecfw.segments.digest import hash_segments
        hash_segments(plan.segments)        # side by side, not one by one as the lines below ask
    lines = [f"{plan.mode} load of {ctx.kernel.format if ctx.kernel else 'kernel'} for {plan.arch} "
             f"via {plan.syscall}"]
    if plan.crash_region:
        lines.append(f"crash region {plan.crash_region.start:#x}-{plan.crash_region.last:#x} "
                     f"({human_size(plan.crash_region.size)})")
    lines.append(f"entry {plan.entry:#x}  flags {plan.flags:#x}")
    lines.append(f"cmdline: {plan.cmdline}")
    if plan.segments:
        lines.append(f"{'segment':<12} {'mem':>18} {'memsz':>12} {'bufsz':>12}" + ("  sha256" if digests else ""))
        for s in sorted(plan.segments, key=lambda s: s.mem):
            lines.append(f"{s.name:<12} {s.mem:#18x} {s.memsz:#12x} {s.bufsz:#12x}"
                         + (f"  {s.sha256[:16]}" if digests else ""))
    if ctx.memmap is not None and plan.segments:
        lo = min(s.mem for s in plan.segments)
        hi = max(s.mem + s.memsz for s in plan.segments)
        around = [r for r in ctx.memmap.regions if r.end > lo - (1 << 30) and r.start < hi + (1 << 30)
                  and r.depth <= 1 and r.kind.name != "OTHER"]
        if around:
            lines.append("memory map around the segments:")
            for r in around:
                lines.append(f"  {'  ' * r.depth}{r.start:#014x}-{r.range.last:#014x} {r.name} ({human_size(r.size)})")
    return "\n".join(lines)

