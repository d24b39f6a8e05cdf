"""Each segment's sha256 for the purgatory, the big ones hashed in threads: the same digests as one by one."""
from __future__ import annotations

import hashlib
import os

from kexecfw.segments.digest import PARALLEL_MIN, hash_segments
from kexecfw.segments.plan import Segment


def test_hash_segments_fills_every_digest_once() -> None:
    segs = [Segment("kernel", os.urandom(3 * PARALLEL_MIN + 5), 0x1000000, 8 * PARALLEL_MIN),
            Segment("initrd", os.urandom(2 * PARALLEL_MIN), 0x8000000, 2 * PARALLEL_MIN),
            Segment("elfcorehdr", os.urandom(4000), 0x9000000, 4096),
            Segment("dtb", os.urandom(PARALLEL_MIN + 1), 0x9100000, 2 * PARALLEL_MIN)]
    hash_segments(segs)
    assert [s._digest for s in segs] == [hashlib.sha256(s.buf).digest() for s in segs]
    assert segs[0].sha256 == hashlib.sha256(segs[0].buf).hexdigest()
    known = segs[1]._digest
    hash_segments(segs)                 # nothing left to hash: the digests stay the same objects
    assert segs[1]._digest is known
    hash_segments([])


def test_a_digest_is_of_the_buffer_only() -> None:
    """The zero fill up to memsz is not hashed: the purgatory checks that it is zero instead."""
    seg = Segment("kernel", b"abc", 0x1000, 0x100000)
    assert seg.digest == hashlib.sha256(b"abc").digest()
