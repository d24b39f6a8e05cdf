"""``kexecfw lab``: run real Debian kernels in QEMU - load, crash, capture - and report.

    kexecfw lab run --arch arm64 [--scenario panic|exec] [--loader kexecfw|kexec-tools] ...
    kexecfw lab run --arch x86_64|arm64 --scenario service [--loader kexecfw|kdump-tools] [--target local|ssh]
    kexecfw lab prepare --arch x86_64     (install QEMU, download and build the guest; no boot)
    kexecfw lab show DIR                  (the summary of an earlier run)
"""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="boot a guest, run a scenario, bring the results back",
                         description="Boot a Debian kernel in QEMU, run the scenario, print a summary.")
    _common(run)
    run.add_argument("--mem", "--memory", type=_mib, default=1024, metavar="SIZE",
                     help="guest RAM: MiB, or with a suffix (8G, 1536M); default 1024")
    run.add_argument("--smp", type=int, default=2, metavar="N", help="guest CPUs (default 2)")
    run.add_argument("--crashkernel", default="256M", metavar="SIZE", help="crashkernel= of the first kernel")
    run.add_argument("--scenario", choices=["panic", "exec", "service"], default="panic",
                     help="panic: load -p, crash, capture (default); exec: load + exec a second kernel; "
                          "service: the README's `kexecfw kdump` commands in a full Debian guest (x86_64, arm64)")
    run.add_argument("--loader", choices=["kexecfw", "kexec-tools", "kdump-tools"], default="kexecfw",
                     help="who loads the next kernel in the guest (default kexecfw); kdump-tools: only with "
                          "--scenario service")
    run.add_argument("--target", choices=["local", "ssh"], default="local",
                     help="--scenario service: where the dump goes: the guest's /var/crash (default), or ssh: an "
                          "sshd the lab starts on the host's 127.0.0.1, reached as 10.0.2.2 through QEMU's user net")
    run.add_argument("--compare-kexec-tools", action="store_true",
                     help="also record Debian's `kexec -d` plan for the same load")
    run.add_argument("--load-args", default="", metavar="ARGS",
                     help="extra options for the guest's `kexecfw load` (e.g. --classic)")
    run.add_argument("--save-vmcore", action="store_true",
                     help="also bring back the whole /proc/vmcore as dump/vmcore.elf (for benchmarks)")
    run.add_argument("--fill-memory", action="store_true",
                     help="fill most of the guest's RAM (anonymous memory, page cache) before the crash; "
                          "implies --measure-dumps")
    run.add_argument("--measure-dumps", action="store_true",
                     help="in the capture kernel, time kexecfw save (zlib, zstd) and makedumpfile with their "
                          "peak RSS, writing to a disk (capture/steps/*.measure)")
    run.add_argument("--dump-rounds", type=int, default=0, metavar="N",
                     help="in the capture kernel, N rounds of kexecfw save, makedumpfile -c and -l, alternating, "
                          "measured (bench/run.py capture); implies --measure-dumps")
    run.add_argument("--bench-load", type=int, default=0, metavar="N",
                     help="before the real load, N rounds of the same load by kexec-tools and kexecfw, timed "
                          "(bench/run.py load)")
    run.add_argument("--keep", metavar="DIR", default=None,
                     help="results directory (default ./lab-results/ARCH-TIMESTAMP)")
    run.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto",
                     help="auto probes KVM once (it hangs without nested virtualisation) and falls back to TCG")
    run.add_argument("--timeout", type=float, default=900, metavar="S", help="give up on the guest after S seconds")
    run.add_argument("--json", action="store_true", help="print result.json instead of the summary")
    prep = sub.add_parser("prepare", help="install QEMU and build the guest userland, without booting")
    _common(prep)
    show = sub.add_parser("show", help="print the summary of an earlier run")
    show.add_argument("directory", metavar="DIR")
    show.add_argument("--json", action="store_true", help="print result.json")


def _mib(text: str) -> int:
    """A memory size for QEMU's -m, in MiB: 1024, 1024M, 8G."""
    units = {"m": 1, "g": 1024}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(t[-1:], None)
    try:
        return int(t[:-1]) * scale if scale else int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in MiB (1024) or with M/G (8G)") from None


def _common(p: argparse.ArgumentParser) -> None:
    from kexecfw.lab.targets import ARCHES
    p.add_argument("--arch", dest="lab_arch", choices=sorted(ARCHES), required=True, help="guest architecture")
    p.add_argument("--kernel-generation", choices=["6.1", "6.12"], default=None,
                   help="Debian 12's 6.1 or Debian 13's 6.12 kernel and userland (default: 6.1, or the only one "
                        "Debian has for the architecture: riscv64 6.12)")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="download/build cache (default $KEXECFW_LAB_CACHE or ~/.cache/kexecfw-lab)")


def run(args: argparse.Namespace) -> int:
    import json

    from kexecfw.errors import ExitCode

    if args.lab_command == "show":
        from kexecfw.lab.result import LabResult
        result = LabResult.load(args.directory)
    elif args.lab_command == "prepare":
        from kexecfw.lab.cache import cache_dir
        from kexecfw.lab.hostprep import ensure_host_tools
        from kexecfw.lab.runner import _stderr_log
        from kexecfw.lab.targets import arch_target, target_generation
        from kexecfw.lab.userland import prepare_userland
        target = arch_target(args.lab_arch)
        gen = target_generation(target, args.kernel_generation)
        ensure_host_tools(target, _stderr_log)
        u = prepare_userland(target, gen, cache_dir(args.cache), _stderr_log)
        print(f"{target.name}: {u.kernel_package} ({u.release}), Python {u.python}, modules {' '.join(u.modules)}")
        print(f"guest userland in {u.root}")
        return int(ExitCode.OK)
    elif args.target != "local":
        from kexecfw.lab.errors import LabError
        from kexecfw.lab.runner import _stderr_log
        if args.scenario != "service":
            raise LabError(f"--target {args.target} is an option of --scenario service only")
        from kexecfw.lab.service import run as run_service
        result = run_service(args.lab_arch, args.loader, keep=args.keep, mem=args.mem, smp=args.smp,
                             cache=args.cache, timeout=args.timeout, log=_stderr_log, target=args.target)
    else:
        from kexecfw.lab.runner import run as lab_run
        result = lab_run(args.lab_arch, args.scenario, args.loader, compare_kexec_tools=args.compare_kexec_tools,
                         mem=args.mem, smp=args.smp, crashkernel=args.crashkernel, keep=args.keep,
                         kernel_generation=args.kernel_generation, accel=args.accel, timeout=args.timeout,
                         cache=args.cache, load_args=args.load_args, save_vmcore=args.save_vmcore,
                         bench_load=args.bench_load, fill_memory=args.fill_memory,
                         measure_dumps=args.measure_dumps, dump_rounds=args.dump_rounds)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.summary())
    return int(ExitCode.OK if result.ok else ExitCode.FAILURE)
