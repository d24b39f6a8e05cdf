"""How ``auto`` chooses its zlib engine (kexecfw/vmcore/zlibengine.py): from given sample timings and
sizes, the fastest within the size budget of stdlib zlib's output, the first listed on a close call;
and the sampling itself, run on real compressors: a sampled page gets the first candidate's stream,
one decision is shared by all threads, a dump with too few pages says so. (Whole dumps written by
each engine: test_engine.py.)"""
from __future__ import annotations

import random
import threading
import time
import zlib

import pytest

from kexecfw.vmcore.zlibengine import PREFER_MARGIN, SIZE_BUDGET, Candidate, Measured, ZlibEngine, choose

MS = 1_000_000


def test_the_fastest_within_the_budget_wins():
    measured = [Measured("isal", 5 * MS, 1010), Measured("libdeflate", 3 * MS, 1020),
                Measured("stdlib", 9 * MS, 1000)]
    assert choose(measured).key == "libdeflate"


def test_a_close_call_goes_to_the_first_listed():
    close = int(3 * MS * (1 + PREFER_MARGIN))
    measured = [Measured("isal", close, 1010), Measured("libdeflate", 3 * MS, 1020),
                Measured("stdlib", 9 * MS, 1000)]
    assert choose(measured).key == "isal"
    measured[0] = Measured("isal", close + 1, 1010)
    assert choose(measured).key == "libdeflate"


def test_a_faster_engine_over_the_budget_loses():
    over = int(1000 * SIZE_BUDGET) + 1
    measured = [Measured("isal", 2 * MS, over), Measured("libdeflate", 4 * MS, over - 1),
                Measured("stdlib", 9 * MS, 1000)]
    assert choose(measured).key == "libdeflate"          # exactly at the budget: allowed


def test_the_reference_always_qualifies():
    measured = [Measured("isal", 1 * MS, 1300), Measured("stdlib", 9 * MS, 1000)]
    assert choose(measured).key == "stdlib"
    assert choose([Measured("stdlib", 9 * MS, 1000)]).key == "stdlib"


def test_a_clock_that_did_not_move_leaves_the_first_listed_within_the_budget():
    measured = [Measured("isal", 0, 1200), Measured("libdeflate", 0, 1020), Measured("stdlib", 0, 1000)]
    assert choose(measured).key == "libdeflate"


def test_the_budget_is_relative_to_the_reference_not_the_smallest():
    # a candidate much smaller than zlib does not push the others out
    measured = [Measured("isal", 2 * MS, 1020), Measured("libdeflate", 4 * MS, 900),
                Measured("stdlib", 9 * MS, 1000)]
    assert choose(measured).key == "isal"


def _pages(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnop_", k=rng.randrange(3, 10))) for _ in range(200)]
    return [b" ".join(rng.choices(words, k=900))[:4096].ljust(4096, b"\n") for _ in range(n)]


def _candidates() -> list[Candidate]:
    """Real compressors with known traits: zlib level 9 (smallest), a stored stream (fastest, far over
    the budget), zlib level 1 (the reference)."""
    return [Candidate("level9", "zlib level 9", lambda p: zlib.compress(p, 9)),
            Candidate("stored", "zlib level 0", lambda p: zlib.compress(p, 0)),
            Candidate("stdlib", "zlib level 1", lambda p: zlib.compress(p, 1))]


def test_sampled_pages_get_the_first_candidates_stream_then_the_choice_compresses():
    engine = ZlibEngine(_candidates(), sample_pages=8)
    compress = engine.make()
    pages = _pages(20)
    outs = [compress(p) for p in pages]
    assert engine.chosen is not None and engine.chosen.key != "stored"     # over the budget
    assert [m.key for m in engine.measured] == ["level9", "stored", "stdlib"]
    assert all(m.ns > 0 and m.nbytes > 0 for m in engine.measured)
    assert engine.chosen.key == choose(engine.measured).key
    for page, out in zip(pages[:9], outs):                                # warm-up page + 8 timed
        assert out == zlib.compress(page, 9)
    for page, out in zip(pages[9:], outs[9:]):
        assert out == engine.chosen.compress(page)
    assert all(zlib.decompress(o) == p for p, o in zip(pages, outs))
    assert "(auto, timed on 8 pages: level9 " in engine.name and engine.name.startswith(engine.chosen.name)
    assert not engine.switches and "; then 1 page in" not in engine.name     # 20 pages: none timed again


def test_threads_share_one_calibration():
    engine = ZlibEngine(_candidates(), sample_pages=16)
    pages = _pages(200, seed=2)
    results: dict[int, bytes] = {}

    def work(start: int) -> None:
        compress = engine.make()
        for i in range(start, len(pages), 4):
            results[i] = compress(pages[i])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.chosen is not None and engine._sampled == 16
    assert all(zlib.decompress(results[i]) == pages[i] for i in range(len(pages)))


@pytest.mark.parametrize("pages", [0, 1, 5])
def test_too_few_pages_to_time_is_said(pages):
    engine = ZlibEngine(_candidates(), sample_pages=8)
    compress = engine.make()
    for page in _pages(pages):
        assert zlib.decompress(compress(page)) == page
    assert engine.chosen is None
    assert engine.name == (f"zlib level 9 (auto: only {pages} non-zero pages, too few to time level9, stored, "
                           f"stdlib)")


def test_one_candidate_is_not_timed():
    only = Candidate("stdlib", "zlib level 1", lambda p: zlib.compress(p, 1))
    engine = ZlibEngine([only])
    assert engine.make() is only.compress and engine.name == "zlib level 1"


class _Slow:
    """A real compressor made slower by a CPU-time cost chosen by the test (busy loop), to play a
    candidate that is fast on a dump's first pages and slow on its later ones."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.extra_ns = 0

    def __call__(self, page: bytes) -> bytes:
        end = time.thread_time_ns() + self.extra_ns
        out = zlib.compress(page, self.level)
        while time.thread_time_ns() < end:
            pass
        return out


def test_the_choice_follows_the_times_after_the_sample():
    """One page in ``retime_every`` is timed again by the admitted candidates; once the one chosen on the
    first pages is slower over all pages timed, the other takes over, and the name says from where."""
    first, second, reference = _Slow(6), _Slow(5), _Slow(1)
    reference.extra_ns = 6_000_000                  # the size reference, slowest throughout
    candidates = [Candidate("first", "zlib level 6", first), Candidate("second", "zlib level 5", second),
                  Candidate("stdlib", "zlib level 1", reference)]
    engine = ZlibEngine(candidates, sample_pages=4, retime_every=4)
    compress = engine.make()
    second.extra_ns = 3_000_000                     # the sample: "second" is slow
    pages = _pages(200, seed=3)
    outs = [compress(p) for p in pages[:5]]
    assert engine.chosen.key == "first"
    assert [candidates[i].key for i in engine._admitted] == ["first", "second"]   # stdlib: the size reference
    second.extra_ns, first.extra_ns = 0, 3_000_000  # later pages: "first" is slow
    outs += [compress(p) for p in pages[5:]]
    assert engine.chosen.key == "second" and engine.switches and engine.switches[0][1] == "second"
    switched_at = engine.switches[0][0]
    assert 5 < switched_at < 200
    assert f"; second from page {switched_at})" in engine.name and engine.name.startswith("zlib level 5 (auto")
    assert "; then 1 page in 4, " in engine.name
    assert all(zlib.decompress(o) == p for p, o in zip(pages, outs))
    # after the switch, pages that are not timed are the new choice's streams
    assert all(out == zlib.compress(page, 5) for page, out in list(zip(pages, outs))[switched_at:])


def test_a_steady_choice_does_not_switch():
    candidates = [Candidate("isal-like", "zlib level 1", lambda p: zlib.compress(p, 1)),
                  Candidate("slower", "zlib level 9", lambda p: zlib.compress(p, 9)),
                  Candidate("stdlib", "zlib level 1", lambda p: zlib.compress(p, 1))]
    engine = ZlibEngine(candidates, sample_pages=8, retime_every=2)
    compress = engine.make()
    for page in _pages(120, seed=4):
        compress(page)
    assert engine.chosen.key == "isal-like" and engine.switches == []
