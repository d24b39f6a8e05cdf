"""The purgatory's sha256 over the segments, hashed ahead in a thread or not: always the same digest."""
from __future__ import annotations

import hashlib
import os

from kexecfw.segments.digest import HASH_CHUNK, HashAhead, segments_sha256
from kexecfw.segments.plan import Segment


def _segments() -> list[Segment]:
    return [Segment("kernel", os.urandom(3 * HASH_CHUNK + 5), 0x1000000, 3 * HASH_CHUNK + (40 << 20)),
            Segment("initrd", os.urandom(HASH_CHUNK // 3), 0x8000000, HASH_CHUNK // 3),
            Segment("elfcorehdr", os.urandom(4000), 0x9000000, 4096),
            Segment("boot_params", b"\x01" * 4096, 0x9100000, 4096)]


def _reference(segments: list[Segment]) -> bytes:
    """What the purgatory computes: each segment's memory, memsz bytes of it (zeros after buf)."""
    h = hashlib.sha256()
    for s in segments:
        h.update(s.buf + bytes(s.memsz - len(s.buf)))
    return h.digest()


def test_digest_covers_each_segments_zero_filled_rest() -> None:
    segs = _segments()
    assert segments_sha256(segs) == _reference(segs)
    assert segments_sha256([]) == hashlib.sha256().digest()


def test_hashing_ahead_gives_the_same_digest() -> None:
    segs = _segments()
    ahead = HashAhead(segs[:2])
    start = ahead.hash_for(segs)
    assert start is not None and start[1] == segs[2:]       # went on from the prefix
    assert segments_sha256(segs, HashAhead(segs[:2])) == _reference(segs)


def test_a_plan_that_changed_is_hashed_from_scratch() -> None:
    segs = _segments()
    ahead = HashAhead(segs[:2])
    replaced = [Segment("kernel", b"other" + segs[0].buf[5:], segs[0].mem, segs[0].memsz), *segs[1:]]
    assert ahead.hash_for(replaced) is None
    assert segments_sha256(replaced, ahead) == _reference(replaced)
    reordered = [segs[1], segs[0], *segs[2:]]
    assert segments_sha256(reordered, HashAhead(segs[:2])) == _reference(reordered)
    assert segments_sha256(segs[:1], HashAhead(segs[:2])) == _reference(segs[:1])   # fewer than hashed


def test_cancel_stops_the_thread_and_leaves_no_prefix() -> None:
    segs = _segments()
    ahead = HashAhead(segs[:2])
    ahead.cancel()
    assert not ahead._thread.is_alive()
    start = ahead.hash_for(segs)
    assert start is None or start[1] == segs[2:]    # cancelled late, after it had finished: still valid
    assert segments_sha256(segs, ahead) == _reference(segs)
