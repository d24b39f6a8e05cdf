"""``python -m kexecfw`` / ``kexecfw``: argparse subcommands, errors as one line.

Each subcommand lives in its own module under ``kexecfw.cli`` with two
functions: ``configure(parser)`` adds its arguments and ``run(args) -> int``
does the work. Command modules import only argparse at module level; what a
command needs is imported inside ``run`` so that ``vmcore dmesg`` in a capture
kernel does not pay for pyelftools or matplotlib.

Start-up of ``vmcore dmesg FILE``: in a capture kernel it must start about as
fast as the interpreter itself, and argparse (with re and gettext) alone costs
more than all of its work. So exactly ``vmcore dmesg PATH`` (no options, PATH not
starting with "-") is dispatched without argparse (:func:`fast_path`), to the same
function the parsed command calls; anything else, including every option, help
and error, goes through the one argparse parser. ``load`` (timed against
``kexec -p`` in emulated guests) is read without argparse too when its command line
is plain (:mod:`kexecfw.cli.options`), into the values argparse would give.
"""
from __future__ import annotations

import gc
import os
import sys

from kexecfw.errors import ExitCode, KexecfwError, UsageError, exit_code_of

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: see the start-up note above
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

# (name, module, one-line help). Order is the order of `kexecfw --help`.
COMMANDS: list[tuple[str, str, str]] = [
    ("load", "kexecfw.cli.load", "plan, validate and load a kernel (kexec -l / -p)"),
    ("unload", "kexecfw.cli.unload", "unload the loaded kernel (kexec -u)"),
    ("exec", "kexecfw.cli.exec_", "reboot into the loaded kernel (kexec -e)"),
    ("status", "kexecfw.cli.status", "is a kernel / crash kernel loaded (kexec -S)"),
    ("memmap", "kexecfw.cli.memmap", "show the memory map kexec plans against"),
    ("snapshot", "kexecfw.cli.snapshot", "copy this system's /proc and /sys files into a sysroot"),
    ("plugins", "kexecfw.cli.plugins", "list plugins, their architectures and hooks"),
    ("vmcore", "kexecfw.cli.vmcore", "read a crash dump: info, notes, dmesg, save"),
    ("crashkernel", "kexecfw.cli.crashkernel", "parse crashkernel= or estimate the size to reserve"),
    ("lab", "kexecfw.cli.lab", "run real kernels in QEMU: load, crash, capture"),
    ("kdump", "kexecfw.cli.kdump", "the kdump service: enable, status, load, test, list, save"),
]


GLOBAL_OPTIONS_WITH_VALUE = ("--sysroot", "--arch")
GLOBAL_DEFAULTS = {"sysroot": "/", "arch": None}
# The commands the global --arch picks a plugin (or crashkernel's rules) for; the others would ignore it.
ARCH_COMMANDS = frozenset({"load", "unload", "exec", "memmap", "crashkernel"})
WHY_NO_ARCH = {
    "vmcore": "a dump names its own architecture (ELF e_machine, the kdump header)",
    "lab": "the guest's architecture is `lab run --arch ARCH`",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that command's (start-up: see chosen_command)."""
    from kexecfw.cli.parser import Parser
    parser = Parser(prog="kexecfw", description="kexec and kdump, with architectures as plugins.")
    parser.add_argument("--sysroot", default=GLOBAL_DEFAULTS["sysroot"], metavar="DIR",
                        help="read /proc and /sys from DIR instead of the live system (never syscalls then)")
    parser.add_argument("--arch", default=GLOBAL_DEFAULTS["arch"],
                        help="architecture plugin to use (default: the sysroot's proc/kcore machine, else the host)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        if only is not None and name != only:
            continue  # the others matter only to `kexecfw --help`, which chooses none (each costs a parser)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = _import(module_name)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def _import(name: str):
    """The module ``name`` (importlib.import_module without importing importlib and warnings)."""
    __import__(name)
    return sys.modules[name]


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command word in ``argv`` (skipping global options), or None (e.g. ``--help``)."""
    at = _command_index(argv)
    return argv[at] if at is not None else None


def _command_index(argv: Sequence[str]) -> int | None:
    names = {name for name, _, _ in COMMANDS}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in GLOBAL_OPTIONS_WITH_VALUE:
            i += 1
        elif arg.startswith("-"):
            if arg in ("-h", "--help"):
                return None
        else:
            return i if arg in names else None
        i += 1
    return None


def refuse_unused_arch(argv: Sequence[str]) -> None:
    """UsageError when ``--arch`` is given to a command that does not use it: before the command word
    (the global option) for every command outside ARCH_COMMANDS, and after it too, except for
    ``lab`` whose own --arch names the guest's."""
    at = _command_index(argv)
    if at is None or argv[at] in ARCH_COMMANDS:
        return
    command = argv[at]
    words = argv[:argv.index("--")] if "--" in argv else argv
    for i, arg in enumerate(words):
        if (arg == "--arch" or arg.startswith("--arch=")) and (i < at or command != "lab"):
            why = WHY_NO_ARCH.get(command, "it does not depend on the architecture")
            raise UsageError(f"--arch does not apply to `{command}`: {why}; leave it out")


def fast_path(argv: Sequence[str]) -> tuple[Callable[[], int], bool] | None:
    """The command for ``argv`` without argparse, and whether the process may end at once after it
    (see :func:`run`); None: use argparse.

    Exactly ``vmcore dmesg PATH``: argparse would parse that argv to ``file=[PATH]`` and every option
    at its default, which is what this calls; a PATH starting with "-" could be an option, so it is
    left to argparse. ``load`` with plain global options and a plain command line (kexecfw.cli.options).
    """
    if len(argv) == 3 and argv[0] == "vmcore" and argv[1] == "dmesg" and not argv[2].startswith("-"):
        from kexecfw.cli.vmcore import dmesg
        path = argv[2]
        return (lambda: _without_cyclic_gc(lambda: dmesg([path]))), True
    at = _command_index(argv)
    if at is not None and argv[at] == "load":
        values = _plain_global_options(argv[:at])
        if values is not None:
            from kexecfw.cli import load
            command = load.parse_fast(argv[at + 1:])
            if command is not None:
                args = _Namespace(**values, **command, command="load")
                # --plot runs matplotlib, which may leave work for exit (atexit): a normal exit then
                return (lambda: _without_cyclic_gc(lambda: load.run(args))), not args.plot
    return None


def _plain_global_options(words: Sequence[str]) -> dict[str, object] | None:
    """``--sysroot DIR`` / ``--arch NAME`` before the command, as argparse would read them, or None
    for any other spelling (``--arch=NAME``, a value starting with "-", help)."""
    values = dict(GLOBAL_DEFAULTS)
    if len(words) % 2:
        return None
    for option, value in zip(words[::2], words[1::2]):
        if option not in GLOBAL_OPTIONS_WITH_VALUE or value.startswith("-"):
            return None
        values[option[2:]] = value
    return values


class _Namespace:
    """The parsed arguments of the fast path (argparse.Namespace without argparse)."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def _without_cyclic_gc(command: Callable[[], int]) -> int:
    """Run a short command that makes no reference cycles (or a few that may live until it ends),
    with the cyclic garbage collector off.

    The collector would only walk the modules being imported, and the interpreter's collections
    at exit would walk every object once more (frozen ones are skipped): ~2 ms of CPU time for
    `vmcore dmesg`, more than its own work; ~20 ms of a `load -p` in an emulated guest. Callers in
    the same process get the collector back (for the objects made after).
    """
    gc.disable()
    try:
        return command()
    finally:
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return its exit code."""
    return _main(list(sys.argv[1:] if argv is None else argv))[0]


def run() -> None:
    """The ``kexecfw`` command and ``python -m kexecfw``: :func:`main`, then exit with its code.

    After ``vmcore dmesg PATH`` and a plain ``load`` (the fast path) the process ends with ``os._exit``
    once stdout and stderr are flushed: the interpreter's teardown (freeing every module and object
    one by one) would take ~1.3 ms, a fifth of what that command costs over a bare interpreter
    (~45 ms of a load in an emulated guest, which frees the kernel's and the initrd's buffers too).
    Those commands leave nothing to finalize: they read files, write stdout (and a load's
    --save-segments files, each closed once written), make the syscall, and join their threads.
    Every other command exits normally (atexit handlers, temporary files, threads).
    """
    code, fast = _main(sys.argv[1:])
    try:
        sys.stdout.flush()      # block-buffered output meets a full disk here, not in the command
    except OSError as e:
        code = _output_failed(e, code)
    if fast:
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _output_failed(e: OSError, code: int) -> int:
    """After stdout failed with ``e``: report it (unless the reader only stopped early, like
    ``| head``) and return the exit code; stdout goes to /dev/null so that no later flush, the
    interpreter's own at exit included, fails again with a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(e, BrokenPipeError):
        return code
    print(f"kexecfw: error: cannot write the output: {e.strerror}", file=sys.stderr)
    return code or exit_code_of(e)


def _main(argv: list[str]) -> tuple[int, bool]:
    """The exit code of ``argv``, and whether the process may end at once (see :func:`run`)."""
    found = fast_path(argv)
    command, fast = found if found is not None else (None, False)
    try:
        if command is None:
            refuse_unused_arch(argv)
            # Configure only the chosen command: `vmcore dmesg` in a capture kernel should not pay for
            # building every other command's parser.
            parser = build_parser(only=chosen_command(argv))
            args = parser.parse_args(argv)
            command = lambda: args._run(args)   # noqa: E731
        return int(command()), fast
    except KexecfwError as e:
        print(f"kexecfw: error: {e.message}", file=sys.stderr)
        return int(e.exit_code), fast
    except KeyboardInterrupt:
        print("kexecfw: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED), fast
    except BrokenPipeError as e:
        return _output_failed(e, ExitCode.OK), fast      # stdout closed early (`| head`): no error
    except OSError as e:
        # An OSError no command turned into a KexecfwError: writing the output (a full disk) when it has
        # no file name, else a file the command read or wrote.
        if e.filename is None:
            return _output_failed(e, ExitCode.OK), fast
        print(f"kexecfw: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return exit_code_of(e), fast
