"""One exception type for every user-facing failure, and the CLI's exit codes.

Everything a user can get wrong (a missing file, an image we cannot load, a
crash region that is too small, not being root) raises :class:`KexecfwError`
with a one-line message that says what is wrong and what to do. The CLI prints
it on stderr and exits with its code; nothing else reaches the user as a
traceback.
"""
from __future__ import annotations


class ExitCode:
    """The CLI's exit codes.

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
