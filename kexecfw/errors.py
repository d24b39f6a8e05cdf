"""One exception type for every user-facing failure, and the CLI's exit codes.

Everything a user can get wrong (a missing file, an image we cannot load, a
crash region that is too small, not being root) raises :class:`KexecfwError`
with a one-line message that says what is wrong and what to do. The CLI prints
it on stderr and exits with its code; nothing else reaches the user as a
traceback.
"""
from __future__ import annotations

import errno


class ExitCode:
    """The CLI's exit codes, the same for every command.

    ===  ===========  ==================================================================
    0    OK           done (``status``: the kernel asked about is loaded)
    1    FAILURE      any other failure (``status``: nothing loaded, like ``kexec -S``)
    2    USAGE        a bad command line: argparse's errors, an option the command does
                      not use (``--arch`` given to ``vmcore``)
    3    BAD_INPUT    an input file, image, dump or sysroot is missing, unreadable,
                      truncated or malformed (including one that decompresses past its cap)
    4    NO_SPACE     no room: the crash region or memory is too small for the segments, or
                      the disk of an output is full (ENOSPC, EDQUOT, EFBIG)
    5    PERMISSION   not allowed: not root, kexec disabled, lockdown, or an output that
                      cannot be written for permissions or a read-only file system
                      (EACCES, EPERM, EROFS)
    6    INCOMPLETE   a dump was saved but not every page (``.incomplete`` file)
    130  INTERRUPTED  Ctrl-C
    ===  ===========  ==================================================================

    Plain int constants rather than an ``enum.IntEnum``: every command imports this module,
    and ``vmcore dmesg`` in a capture kernel must not pay for importing enum (~1 ms, a third
    of its start-up budget). ``int(ExitCode.X)``, comparisons and ``sys.exit(ExitCode.X)``
    work the same.
    """

    OK = 0
    FAILURE = 1          # generic failure (also `status`: nothing loaded, like kexec -S)
    USAGE = 2            # bad command line (argparse's own code)
    BAD_INPUT = 3        # unreadable or invalid input file or sysroot
    NO_SPACE = 4         # crash region or disk too small
    PERMISSION = 5       # not root, kexec disabled, lockdown
    INCOMPLETE = 6       # a dump that could not be completed
    INTERRUPTED = 130


# errno values of a failed write and the exit code they mean (see ExitCode)
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def exit_code_of(e: OSError) -> int:
    """The exit code of a failed file operation: NO_SPACE for a full disk, PERMISSION for a
    denied or read-only target, else FAILURE."""
    if e.errno in NO_SPACE_ERRNOS:
        return ExitCode.NO_SPACE
    return ExitCode.PERMISSION if e.errno in PERMISSION_ERRNOS else ExitCode.FAILURE


class KexecfwError(Exception):
    """A failure to report to the user as one line, without a traceback."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(KexecfwError):
    """A command line argparse accepts but the command cannot use (e.g. ``--arch`` for ``vmcore``)."""

    exit_code = ExitCode.USAGE


class BadInputError(KexecfwError):
    """An input file, snapshot or image is missing, truncated or malformed."""

    exit_code = ExitCode.BAD_INPUT


class NoSpaceError(KexecfwError):
    """Segments do not fit the memory (crash region) or a dump does not fit the disk."""

    exit_code = ExitCode.NO_SPACE


class PermissionDeniedError(KexecfwError):
    """Not root, kexec disabled, or the kernel is locked down."""

    exit_code = ExitCode.PERMISSION


class ValidationError(KexecfwError):
    """A plan breaks one of the kernel's rules for kexec segments.

    ``rule`` names the rule (e.g. ``"overlap"``), ``segment`` the offending
    segment's name, so a caller can tell failures apart without parsing text.
    """

    def __init__(self, rule: str, segment: str | None, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.segment = segment
