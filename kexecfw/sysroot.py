"""A sysroot: a directory that mirrors the live system's /proc and /sys.

Every reader in kexecfw takes a :class:`Sysroot`, so the same code runs on
``/`` and on a snapshot a user sent with a bug report. Paths are relative to
the root (``proc/iomem``, ``sys/kernel/vmcoreinfo`` ...). Only ``/`` is live:
a load or an exec refuses to run on anything else.
"""
from __future__ import annotations

import os

from kexecfw.errors import BadInputError
from kexecfw.memory.ranges import ADDRESS_LIMIT
from kexecfw.records import Record

TYPE_CHECKING = False   # pathlib for annotations only: a load works on str paths (kexecfw.load)
if TYPE_CHECKING:
    from pathlib import Path


# The largest CONFIG_NR_CPUS any kernel kexecfw loads can have: 8192 on x86_64 (MAXSMP; arch/x86/Kconfig
# "range 2 8192"), 4096 on arm64 (arch/arm64/Kconfig "range 2 4096"). CPU numbers are below it.
NR_CPUS_MAX = 8192
# The size of a note buffer sysfs points at: note_buf_t is a few hundred bytes, VMCOREINFO's note a page or two.
NOTE_SIZE_MAX = 1 << 20


def parse_cpu_list(text: str) -> list[int]:
    """Parse the kernel's CPU list format (``0-3,6,8-9``) as in /sys/devices/system/cpu/online.

    Every CPU number is below NR_CPUS_MAX and the parts ascend without overlapping, as the kernel
    prints them (bitmap_print_to_pagebuf), so a list holds at most NR_CPUS_MAX numbers."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        try:
            lo, dash, hi = part.partition("-")
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise BadInputError(f"malformed CPU list {_shown(text)}: {_shown(part)} is not N or N-M") from None
        if not 0 <= first <= last < NR_CPUS_MAX:
            raise BadInputError(f"CPU list {_shown(text)}: {_shown(part)} is not a range of CPU numbers 0 to "
                                f"{NR_CPUS_MAX - 1} (the kernel's largest NR_CPUS is {NR_CPUS_MAX})")
        if cpus and first <= cpus[-1]:
            raise BadInputError(f"CPU list {_shown(text)}: {_shown(part)} does not come after CPU {cpus[-1]} "
                                "(list the CPUs in ascending order, each once)")
        cpus.extend(range(first, last + 1))
    return cpus


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut to a line's worth."""
    text = text.strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


class CrashNote(Record, frozen=True):
    """Where a CPU's crash note buffer lives (sys/devices/system/cpu/cpuN/crash_notes{,_size})."""

    cpu: int
    address: int
    size: int


class Sysroot:
    """The root directory, and the files under it by relative path.

    Paths are str inside (:meth:`file`): pathlib costs a load in an emulated guest ~50 ms of imports
    (pathlib, urllib.parse, ipaddress, fnmatch), about as much as all of its planning; :attr:`root` and
    :meth:`path` give pathlib.Path for the callers that want one."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root_dir = os.path.normpath(os.fspath(root))
        if not os.path.isdir(self.root_dir):
            raise BadInputError(f"sysroot {self.root_dir} is not a directory")

    def __repr__(self) -> str:
        return f"Sysroot({self.root_dir!r})"

    @property
    def root(self) -> Path:
        from pathlib import Path
        return Path(self.root_dir)

    @property
    def is_live(self) -> bool:
        """True only for the running system's own root, where syscalls are allowed."""
        try:
            return os.path.realpath(self.root_dir) == "/"
        except OSError:
            return False

    def file(self, rel: str) -> str:
        """The path of ``rel`` (``proc/iomem``) under the root, as a str."""
        rel = rel.lstrip("/")
        return os.path.join(self.root_dir, rel) if rel else self.root_dir

    def path(self, rel: str) -> Path:
        from pathlib import Path
        return Path(self.file(rel))

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.file(rel))

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes:
        path = self.file(rel)
        try:
            with open(path, "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except FileNotFoundError:
            raise BadInputError(f"{path} does not exist (is {self.root_dir} a sysroot of a Linux system?)") from None
        except PermissionError:
            raise BadInputError(f"cannot read {path}: permission denied (run as root)") from None
        except OSError as e:
            raise BadInputError(f"cannot read {path}: {e.strerror}") from None

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8", "replace")

    def read_optional(self, rel: str) -> str | None:
        """Text of a file that may legitimately be absent (None then)."""
        return self.read_text(rel) if os.path.isfile(self.file(rel)) else None

    # --- small typed readers shared by the core and the plugins -------------------

    def cmdline(self) -> str:
        return self.read_text("proc/cmdline").strip("\0\n ")

    def cpus(self, which: str = "possible") -> list[int]:
        """CPU numbers from sys/devices/system/cpu/{possible,present,online}."""
        return parse_cpu_list(self.read_text(f"sys/devices/system/cpu/{which}"))

    def crash_notes(self) -> list[CrashNote]:
        """Per-CPU crash note buffers, for every possible CPU that has one, in CPU order."""
        notes: list[CrashNote] = []
        for cpu in self.cpus("possible"):
            base = f"sys/devices/system/cpu/cpu{cpu}"
            text = self.read_optional(f"{base}/crash_notes")
            if text is None:
                continue
            size_text = self.read_optional(f"{base}/crash_notes_size")
            try:
                addr = int(text.strip(), 16)
                size = int(size_text.strip()) if size_text else 0
            except ValueError:
                raise BadInputError(f"malformed {self.file(base)}/crash_notes: {_shown(text)}") from None
            if not 0 <= addr < ADDRESS_LIMIT or not 0 <= size <= NOTE_SIZE_MAX:
                raise BadInputError(f"{self.file(base)}/crash_notes{{,_size}}: address {addr:#x} or size {size} "
                                    f"out of range (a 64-bit address, at most {NOTE_SIZE_MAX} bytes)")
            notes.append(CrashNote(cpu, addr, size))
        return notes

    def vmcoreinfo_location(self) -> tuple[int, int]:
        """Physical address and size of the VMCOREINFO note (sys/kernel/vmcoreinfo)."""
        text = self.read_text("sys/kernel/vmcoreinfo").split()
        try:
            addr, size = int(text[0], 16), int(text[1], 16)
        except (IndexError, ValueError):
            raise BadInputError(f"malformed {self.file('sys/kernel/vmcoreinfo')}: {_shown(' '.join(text))}") from None
        if not 0 <= addr < ADDRESS_LIMIT or not 0 < size <= NOTE_SIZE_MAX:
            raise BadInputError(f"{self.file('sys/kernel/vmcoreinfo')}: address {addr:#x} or size {size:#x} out of "
                                f"range (a 64-bit address, 1 to {NOTE_SIZE_MAX} bytes)")
        return addr, size

    def kexec_state(self) -> dict[str, int]:
        """sys/kernel/kexec_{loaded,crash_loaded,crash_size}; absent files are left out."""
        state: dict[str, int] = {}
        for name in ("kexec_loaded", "kexec_crash_loaded", "kexec_crash_size"):
            text = self.read_optional(f"sys/kernel/{name}")
            if text is not None and text.strip().lstrip("-").isdigit():
                state[name] = int(text.strip())
        return state
