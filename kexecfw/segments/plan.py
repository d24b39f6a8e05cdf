"""A load plan: named segments (buf, mem, memsz), entry and flags, as kexec_load takes them."""
from __future__ import annotations

from kexecfw.memory.ranges import Range
from kexecfw.records import Record, fresh


class Segment(Record, eq=False):
    """One ``struct kexec_segment`` (include/uapi/linux/kexec.h) with a name.

    ``buf`` is copied to physical ``mem``; the rest of ``memsz`` is zero-filled. It is bytes or a
    read-only-by-contract memoryview of the kernel's or initrd's file (kexecfw.load.read_input maps them
    rather than copy 30+ MiB): index, slice, hash or ``bytes()`` it, do not concatenate it.
    """

    name: str
    buf: bytes | memoryview
    mem: int
    memsz: int
    _digest = None      # bytes once known; not a field (no annotation): set by digest

    @property
    def bufsz(self) -> int:
        return len(self.buf)

    @property
    def range(self) -> Range:
        return Range(self.mem, self.mem + self.memsz)

    @property
    def digest(self) -> bytes:
        """sha256 of the buffer (bufsz bytes), computed once: for the purgatory's check and for
        ``--dry-run``; :func:`kexecfw.segments.digest.hash_segments` computes several at once."""
        if self._digest is None:
            import hashlib  # here: a load that checks and shows no digests does not load libcrypto
            self._digest = hashlib.sha256(self.buf).digest()
        return self._digest

    @property
    def sha256(self) -> str:
        """:attr:`digest` in hex."""
        return self.digest.hex()

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "mem": f"{self.mem:#x}", "memsz": f"{self.memsz:#x}",
                "bufsz": f"{self.bufsz:#x}", "sha256": self.sha256}


class Plan(Record):
    """Everything a load needs; what ``--dry-run`` prints and ``--save-segments`` writes."""

    arch: str
    mode: str                           # "normal" or "panic"
    syscall: str                        # "kexec_load" or "kexec_file_load"
    entry: int
    flags: int
    cmdline: str
    crash_region: Range | None
    segments: list[Segment] = fresh(list)
    log: list[str] = fresh(list)

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def to_json(self) -> dict:
        return {
            "schema": 1,
            "arch": self.arch,
            "mode": self.mode,
            "syscall": self.syscall,
            "entry": f"{self.entry:#x}",
            "flags": f"{self.flags:#x}",
            "cmdline": self.cmdline,
            "crash_region": ([f"{self.crash_region.start:#x}", f"{self.crash_region.last:#x}"]
                             if self.crash_region else None),
            "segments": [s.to_json() for s in self.segments],
        }
