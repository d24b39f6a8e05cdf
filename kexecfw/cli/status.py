"""``kexecfw status``: like ``kexec -S``: exit 0 when a kernel (``-p``: a crash kernel) is loaded, else 1."""
from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter   # the exit status table as written
    p.epilog = ("exit status (kexecfw.errors.ExitCode):\n"
                "  0  the kernel asked about is loaded (-p: the crash kernel)\n"
                "  1  it is not loaded (like kexec -S)\n"
                "  2  a bad command line\n"
                "  3  the sysroot has no kexec state: a kernel without CONFIG_KEXEC, an incomplete snapshot")
    p.add_argument("-p", "--panic", action="store_true", help="ask about the crash kernel")
    p.add_argument("--json", action="store_true", help="print a JSON document (loaded, crash_loaded, crash_size)")


def run(args: argparse.Namespace) -> int:
    from kexecfw.cli.common import human_size, print_json, sysroot_of
    from kexecfw.errors import BadInputError

    sysroot = sysroot_of(args)
    state = sysroot.kexec_state()
    if "kexec_loaded" not in state:
        raise BadInputError(f"{sysroot.path('sys/kernel/kexec_loaded')} is missing: this kernel has no kexec "
                            "support (CONFIG_KEXEC) or the sysroot is incomplete")
    loaded = state.get("kexec_crash_loaded" if args.panic else "kexec_loaded") == 1
    if args.json:
        print_json({"schema": 1, "loaded": state.get("kexec_loaded") == 1,
                    "crash_loaded": state.get("kexec_crash_loaded") == 1,
                    "crash_size": f"{state.get('kexec_crash_size', 0):#x}"})
    else:
        print(f"kernel loaded: {'yes' if state.get('kexec_loaded') == 1 else 'no'}")
        print(f"crash kernel loaded: {'yes' if state.get('kexec_crash_loaded') == 1 else 'no'}")
        print(f"crash region size: {human_size(state.get('kexec_crash_size', 0))}")
    return 0 if loaded else 1
