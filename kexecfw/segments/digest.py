"""The segments' sha256 digests for the purgatory's check, hashed side by side on the CPUs there are.

The purgatory checks each region of memory against its own digest (and that the rest of its memsz is
still zero; kexecfw/purgatory/verify.c), so the digests do not depend on each other: the kernel
and the initrd, tens of MiB each and most of a load's time on a slow CPU, are hashed in threads
at the same time (hashlib lets go of the GIL while it hashes). Their sizes differ (an arm64 Image
of 31 MiB beside a 16 MiB initrd), so :func:`sha256_regions` cuts the big segments into pieces of
about an equal share each, one region per piece: two CPUs then finish together.
"""
from __future__ import annotations

import os
import threading

from kexecfw.segments.plan import Segment

PARALLEL_MIN = 1 << 20      # smaller buffers are hashed in the calling thread
PIECE_ALIGN = 1 << 12       # pieces start page-aligned, as the segments do


def hash_segments(segments: list[Segment]) -> None:
    """Compute every segment's :attr:`~kexecfw.segments.plan.Segment.digest` not known yet (what
    ``--dry-run`` shows: one digest per whole segment)."""
    todo = [s for s in segments if s._digest is None]
    for s, digest in zip(todo, _hash_all([memoryview(s.buf) for s in todo])):
        s._digest = digest


def sha256_regions(segments: list[Segment], max_regions: int, cpus: int | None = None
                   ) -> list[tuple[int, int, int, bytes]]:
    """The purgatory's regions (start, bufsz, memsz, sha256 of the bufsz bytes) covering ``segments``:
    a segment bigger than an even share of all the bytes over ``cpus`` (default: the CPUs this process
    may run on) becomes several regions, unless that would need more than ``max_regions``."""
    cpus = cpus or len(os.sched_getaffinity(0))
    share = -(-sum(s.bufsz for s in segments) // cpus)
    share = max(PARALLEL_MIN, -(-share // PIECE_ALIGN) * PIECE_ALIGN)
    pieces = [piece for s in segments for piece in _pieces(s, share)]
    if len(pieces) > max_regions:
        pieces = [(s, 0, s.bufsz, s.memsz) for s in segments]
    digests = _hash_all([memoryview(s.buf)[offset:offset + size] for s, offset, size, _ in pieces])
    return [(s.mem + offset, size, memsz, digest) for (s, offset, size, memsz), digest in zip(pieces, digests)]


def _pieces(segment: Segment, share: int) -> list[tuple[Segment, int, int, int]]:
    """(segment, offset, bufsz, memsz) of each piece: the last keeps the zero fill up to memsz."""
    count = max(1, -(-segment.bufsz // share))
    step = -(-segment.bufsz // count // PIECE_ALIGN) * PIECE_ALIGN or PIECE_ALIGN
    out = []
    for offset in range(0, max(segment.bufsz, 1), step):
        size = min(step, segment.bufsz - offset)
        last = offset + step >= segment.bufsz
        out.append((segment, offset, size, segment.memsz - offset if last else size))
    return out


def _hash_all(buffers: list[memoryview]) -> list[bytes]:
    """sha256 of each buffer: the big ones but the first in threads, the rest here meanwhile."""
    import hashlib  # here: a load that checks and shows no digests does not load libcrypto
    digests: list[bytes] = [b""] * len(buffers)

    def work(i: int) -> None:
        digests[i] = hashlib.sha256(buffers[i]).digest()

    big = [i for i, b in enumerate(buffers) if b.nbytes >= PARALLEL_MIN]
    threads = [threading.Thread(target=work, args=(i,), name=f"sha256 {i}") for i in big[1:]]
    for t in threads:
        t.start()
    for i in range(len(buffers)):
        if i not in big[1:]:
            work(i)
    for t in threads:
        t.join()
    return digests
