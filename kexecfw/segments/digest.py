"""The sha256 the purgatory checks before it enters the next kernel, optionally hashed ahead.

The digest covers the segments in order, each as the purgatory sees it in memory: ``buf``, then
the ``memsz - bufsz`` zeros the kernel fills in (tens of MiB for an x86_64 kernel's init_size),
as the kernel's own kexec_file_load digest and kexec-tools do.

Hashing those tens of MiB is the slowest step of a load on a slow CPU (a TCG guest: over a
second), and it needs only the contents of the segments, not the finished plan. So the big
segments placed first (kernel, initrd) can be hashed by :class:`HashAhead` in a thread while the
rest is planned (hashlib lets go of the GIL while it hashes); :func:`segments_sha256` then goes on
from that prefix when the plan still starts with those very segments, or hashes from scratch.
"""
from __future__ import annotations

import hashlib
import threading

from kexecfw.segments.plan import Segment

ZERO_CHUNK = 1 << 16        # zeros are fed from one small buffer (kexec-tools' null_buf), not allocated
HASH_CHUNK = 1 << 22        # a thread hashing ahead looks at its stop flag between chunks


def _hash_segment(h: "hashlib._Hash", buf: bytes, memsz: int, stopped=lambda: False) -> bool:
    """Feed ``buf`` and its zero-filled rest up to ``memsz`` into ``h``; False if ``stopped()``."""
    view = memoryview(buf)
    for at in range(0, len(view), HASH_CHUNK):
        if stopped():
            return False
        h.update(view[at:at + HASH_CHUNK])
    zeros = memoryview(bytes(ZERO_CHUNK))
    for left in range(memsz - len(buf), 0, -ZERO_CHUNK):
        h.update(zeros[:min(left, ZERO_CHUNK)])
    return True


class HashAhead:
    """Hash ``segments`` (a plan's first ones, final already) in a background thread."""

    def __init__(self, segments: list[Segment]) -> None:
        # what was hashed, by identity: a segment replaced later (new buf) will not match
        self.prefix = [(seg, seg.buf, seg.memsz) for seg in segments]
        self._hash = hashlib.sha256()
        self._stop = False
        self._complete = False
        self._thread = threading.Thread(target=self._run, name="kexecfw-sha256-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._complete = all(_hash_segment(self._hash, buf, memsz, lambda: self._stop)
                                 for _, buf, memsz in self.prefix)
        except Exception:   # noqa: BLE001 - nothing to report: the final digest starts over
            self._complete = False

    def cancel(self) -> None:
        """Stop hashing (the plan failed or needs no digest) and wait for the thread."""
        self._stop = True
        self._thread.join()

    def hash_for(self, segments: list[Segment]) -> "tuple[hashlib._Hash, list[Segment]] | None":
        """A copy of the hash so far and the segments left, if ``segments`` starts with the prefix."""
        self._thread.join()
        if not self._complete or len(segments) < len(self.prefix):
            return None
        for seg, (ahead, buf, memsz) in zip(segments, self.prefix):
            if seg is not ahead or seg.buf is not buf or seg.memsz != memsz:
                return None
        return self._hash.copy(), segments[len(self.prefix):]


def segments_sha256(segments: list[Segment], ahead: HashAhead | None = None) -> bytes:
    """The digest of ``segments`` as the purgatory checks it, going on from ``ahead`` if it fits."""
    start = ahead.hash_for(segments) if ahead is not None else None
    h, rest = start if start is not None else (hashlib.sha256(), segments)
    for seg in rest:
        _hash_segment(h, seg.buf, seg.memsz)
    return h.digest()
