"""The segments' sha256 digests for the purgatory's check, the big ones hashed side by side.

The purgatory checks each segment against its own digest (and that the rest of its memsz is
still zero; kexecfw/purgatory/verify.c), so the digests do not depend on each other: the kernel
and the initrd, tens of MiB each and most of a load's time on a slow CPU, are hashed in threads
at the same time (hashlib lets go of the GIL while it hashes).
"""
from __future__ import annotations

import threading

from kexecfw.segments.plan import Segment

PARALLEL_MIN = 1 << 20      # smaller buffers are hashed in the calling thread


def hash_segments(segments: list[Segment]) -> None:
    """Compute every segment's :attr:`~kexecfw.segments.plan.Segment.digest` not known yet."""
    big = [s for s in segments if s._digest is None and s.bufsz >= PARALLEL_MIN]
    threaded = big[1:]      # the first big one and the small ones are hashed here, meanwhile
    threads = [threading.Thread(target=lambda s=s: s.digest, name=f"sha256 {s.name}") for s in threaded]
    for t in threads:
        t.start()
    for s in segments:
        if s not in threaded:
            s.digest
    for t in threads:
        t.join()
