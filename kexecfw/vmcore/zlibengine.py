"""zlib-format page compression (``vmcore save -c zlib``, the default): the engine that is fastest
here, measured on the dump's own first pages.

Every reader of a zlib-compressed kdump page (makedumpfile, crash, drgn, libkdumpfile) calls zlib's
``uncompress()`` on it: any engine that writes a standard zlib stream (RFC 1950) will do, whichever
wrote it. The candidates (docs/vmcore-save-speed.md has the measurements, on the kept pages of an
807 MiB x86_64 lab vmcore at ``-d 31``, one thread, CPU time):

* ``isal``: ISA-L level 1 (the ``isal`` package). It finds no match shorter than 4 bytes and loses
  most on tables of 32-bit values that share their top bytes (the kernel's unwind and offset tables),
  which it leaves at 70-78 % of a page where zlib gets about 55 %: those pages are compressed again
  with libdeflate level 2 and the smaller stream is kept. 1.027x makedumpfile -c's size.
* ``libdeflate``: libdeflate level 1 (the ``deflate`` package), the same retry with its level 2 for
  the pages level 1 leaves at 70-78 %. 1.019x.
* ``stdlib``: the standard library's zlib level 1, what makedumpfile -c runs. 1.000x.

Which is fastest depends on the CPU more than on the data: on the host (AVX2) ISA-L+retry takes 0.89x
libdeflate+retry's time, under QEMU TCG (the lab's capture kernels; SIMD emulated) 1.95x. So ``auto``
(the default) times them at run time, once per save (the pool's threads share it): the first
:data:`SAMPLE_PAGES` non-zero pages after one warm-up page are compressed by every candidate, in
rotating order, each timed on the thread's CPU clock (what other processes do does not count), and
written as the first candidate's stream. The rest goes to the fastest candidate whose sample output is
within :data:`SIZE_BUDGET` of stdlib zlib level 1's (makedumpfile -c's; so ``stdlib`` always
qualifies), the earlier listed (isal, libdeflate, stdlib) unless a later one is :data:`PREFER_MARGIN`
faster, so that close calls go the same way from run to run and so does the file. The budget guards
against data a fast engine compresses badly, not against its usual few per cent: the first pages are no
sample of a dump's size (here ISA-L is 1.1 % *smaller* than zlib on the first 32 and 2.7 % bigger over
the dump; in the capture kernel of a filled 8 GiB guest both fast engines were 6.7 % bigger on the first
32 and 2-3 % over the dump, and a 3 % budget chose stdlib zlib there: the save took twice as long for
the same size). Over whole dumps the candidates stay at +1.9 % and +2.7 % (docs/vmcore-save-speed.md),
within issue 14's +5 %. Cost: 2.5 ms of
CPU on the host, 15 ms under TCG (user mode), of which the first candidate's share (0.5 and 5 ms) is
the writing of the sampled pages.

Both packages are optional, installed where they have wheels (x86_64, aarch64; riscv64 has neither):
a missing one is simply not a candidate, and the retry of ``isal`` falls back to stdlib zlib level 1.
``$KEXECFW_ZLIB_ENGINE`` forces one candidate (``isal``, ``libdeflate``, ``stdlib``) or ``auto``.
:attr:`ZlibEngine.name` says what ran and, for ``auto``, the sample's figures.
"""
from __future__ import annotations

import os
import threading
import time

from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: a capture kernel's save does not import typing
if TYPE_CHECKING:
    from typing import Callable, Sequence

ENGINE_ENV = "KEXECFW_ZLIB_ENGINE"
ENGINE_CHOICES = ("auto", "isal", "libdeflate", "stdlib")
# the first engine's output sizes (fractions of the page) whose page is compressed again by the retry
RETRY_FROM, RETRY_BELOW = 0.70, 0.78
# non-zero pages timed by ``auto`` (32 pages: 0.13 MB, 2.5 ms with all three candidates on the host)
SAMPLE_PAGES = 32
# after the sample, one non-zero page in this many is compressed again by each candidate the sample
# admitted, timed: a dump's first pages are no sample of its later ones (in the capture kernel of a filled
# 8 GiB guest ISA-L was within 10 % of libdeflate on the first 32 pages, and libdeflate is twice as fast
# under TCG over the dump), so the choice follows the times over the whole save. Cost: a page in 64
# compressed once more by the candidate not chosen, ~2 %.
RETIME_EVERY = 64
# a candidate's sample output may be at most this times stdlib zlib level 1's
SIZE_BUDGET = 1.10
# a candidate listed later must be this much faster to be chosen: close calls (ISA-L and libdeflate
# are within 10-15 % of each other on the host) then go the same way from run to run, and so does
# the dump's content, instead of following the sample's noise
PREFER_MARGIN = 0.10

Compress = "Callable[[bytes], bytes]"


class Candidate(TupleRecord):
    key: str                 # what $KEXECFW_ZLIB_ENGINE calls it
    name: str                # library, version, level (and retry)
    compress: Compress


class Measured(TupleRecord):
    """A candidate's cost on the sample: CPU nanoseconds and bytes written (a page that does not shrink
    counted at the page size, as it is stored raw)."""
    key: str
    ns: int
    nbytes: int


def within_budget(measured: Sequence[Measured], reference: str = "stdlib",
                  budget: float = SIZE_BUDGET) -> list[Measured]:
    """Those of ``measured`` whose bytes are at most ``budget`` times the ``reference``'s (which is
    always one of them)."""
    limit = next(m.nbytes for m in measured if m.key == reference) * budget
    return [m for m in measured if m.nbytes <= limit]


def choose(measured: Sequence[Measured], reference: str = "stdlib", budget: float = SIZE_BUDGET,
           margin: float = PREFER_MARGIN) -> Measured:
    """Of ``measured`` (in order of preference), those :func:`within_budget`: the first within
    ``margin`` of the fastest's time."""
    admitted = within_budget(measured, reference, budget)
    fastest = min(m.ns for m in admitted)
    return next(m for m in admitted if m.ns <= fastest * (1 + margin))


def _with_retry(first: Compress, retry: Compress, page_size: int) -> Compress:
    lo, hi = int(RETRY_FROM * page_size), int(RETRY_BELOW * page_size)

    def compress(page: bytes) -> bytes:
        out = first(page)
        if lo <= len(out) < hi:
            again = retry(page)
            if len(again) < len(out):
                return again
        return out
    return compress


def _stdlib() -> Candidate:
    import zlib
    compress = zlib.compress
    return Candidate("stdlib", f"zlib {zlib.ZLIB_RUNTIME_VERSION} level 1", lambda page: compress(page, 1))


def _libdeflate_at(level: int) -> tuple[str, Compress] | None:
    """libdeflate (the ``deflate`` package) at ``level``: its name and compress function; None if not
    installed."""
    try:
        import deflate
    except ImportError:
        return None
    compress = deflate.zlib_compress
    return (f"libdeflate (deflate {getattr(deflate, '__version__', '?')}) level {level}",
            lambda page: compress(page, level))


def _libdeflate(page_size: int) -> Candidate | None:
    first = _libdeflate_at(1)
    if first is None:
        return None
    retry = _libdeflate_at(2)[1]
    return Candidate("libdeflate", f"{first[0]}, level 2 where level 1 leaves {RETRY_FROM:.0%}-{RETRY_BELOW:.0%}",
                     _with_retry(first[1], retry, page_size))


def _isal(page_size: int) -> Candidate | None:
    try:
        import isal
        from isal.isal_zlib import compress
    except ImportError:
        return None
    retry_name, retry = _libdeflate_at(2) or _stdlib()[1:]
    return Candidate("isal", f"isal {getattr(isal, '__version__', '?')} level 1, {retry_name} where ISA-L "
                     f"leaves {RETRY_FROM:.0%}-{RETRY_BELOW:.0%}",
                     _with_retry(lambda page: compress(page, 1), retry, page_size))


class ZlibEngine:
    """What compresses pages to zlib streams: ``make()`` gives a compress function (one per thread),
    ``name`` says which library and level ran (for the save's summary and --json). With several
    candidates, the first ``sample_pages`` + 1 pages any thread compresses choose the one for all, and
    one page in ``retime_every`` after them is timed again with each candidate the sample admitted."""

    def __init__(self, candidates: Sequence[Candidate], page_size: int = 4096,
                 sample_pages: int = SAMPLE_PAGES, retime_every: int = RETIME_EVERY) -> None:
        self.candidates = list(candidates)
        self.page_size = page_size
        self.sample_pages = sample_pages
        self.retime_every = retime_every
        self._lock = threading.Lock()
        self._sampled = -1                       # the first page warms every candidate up, untimed
        self._ns = [0] * len(self.candidates)
        self._bytes = [0] * len(self.candidates)
        self.measured: list[Measured] = []
        self.chosen: Candidate | None = self.candidates[0] if len(self.candidates) == 1 else None
        # after the sample: the candidates within the size budget, their time on the pages timed again
        self._admitted: list[int] = []
        self._retimed_ns: list[int] = []
        self._retimed = 0
        self._count = 0                          # pages compressed (approximate with threads: it only paces)
        self.switches: list[tuple[int, str]] = []     # (page, candidate key) where the choice changed

    @property
    def name(self) -> str:
        if len(self.candidates) == 1:
            return self.candidates[0].name
        keys = ", ".join(c.key for c in self.candidates)
        if self.chosen is None:
            return (f"{self.candidates[0].name} (auto: only {self._sampled + 1} non-zero pages, too few to "
                    f"time {keys})")
        ref = next(m.nbytes for m in self.measured if m.key == "stdlib") or 1
        figures = ", ".join(f"{m.key} {m.ns / 1e6:.2f} ms {m.nbytes / ref:.3f}x" for m in self.measured)
        name = f"{self.chosen.name} (auto, timed on {self.sample_pages} pages: {figures} of zlib level 1's size"
        if self._retimed:
            again = ", ".join(f"{self.candidates[i].key} {ns / 1e6:.1f} ms"
                              for i, ns in zip(self._admitted, self._retimed_ns))
            name += f"; then 1 page in {self.retime_every}, {self._retimed} pages: {again}"
        for page, key in self.switches:
            name += f"; {key} from page {page}"
        return name + ")"

    def make(self) -> Compress:
        if len(self.candidates) == 1:
            return self.candidates[0].compress

        def compress(page: bytes) -> bytes:
            self._count += 1
            chosen = self.chosen
            if chosen is None:
                return self._sample(page)
            if self._count % self.retime_every == 0 and len(self._admitted) > 1:
                return self._retime(page)
            return chosen.compress(page)
        return compress

    def _sample(self, page: bytes) -> bytes:
        """``page`` compressed by every candidate (timed, once past the warm-up page): the first's stream.
        (Not the smallest: which pages are sampled depends on the pool's threads, and a dump whose
        engine stays the first one is then the same file whatever the threads did.)"""
        with self._lock:
            if self.chosen is not None:          # decided while this thread waited
                return self.chosen.compress(page)
            clock = time.thread_time_ns
            n = len(self.candidates)
            written = b""
            for j in range(n):
                i = (j + self._sampled) % n     # who runs first (colder caches) rotates
                fn = self.candidates[i].compress
                started = clock()
                out = fn(page)
                took = clock() - started
                if self._sampled >= 0:
                    self._ns[i] += took
                    self._bytes[i] += min(len(out), self.page_size)
                if i == 0:
                    written = out
            self._sampled += 1
            if self._sampled == self.sample_pages:
                self.measured = [Measured(c.key, ns, nbytes)
                                 for c, ns, nbytes in zip(self.candidates, self._ns, self._bytes)]
                winner = choose(self.measured)
                # timed again: the fast candidates within the budget, and the winner (the reference
                # zlib only if it won: it is there for its size)
                fit = {m.key for m in within_budget(self.measured)} - {"stdlib"} | {winner.key}
                self._admitted = [i for i, m in enumerate(self.measured) if m.key in fit]
                self._retimed_ns = [self._ns[i] for i in self._admitted]
                self.chosen = next(c for c in self.candidates if c.key == winner.key)
            return written

    def _retime(self, page: bytes) -> bytes:
        """``page`` compressed by each admitted candidate, timed (added to the sample's times): the
        chosen one's stream; the choice moves to another candidate once it is :data:`PREFER_MARGIN`
        faster over all the pages timed."""
        with self._lock:
            chosen = self.chosen
            clock = time.thread_time_ns
            written = b""
            k = len(self._admitted)
            for j in range(k):
                slot = (j + self._retimed) % k
                candidate = self.candidates[self._admitted[slot]]
                started = clock()
                out = candidate.compress(page)
                self._retimed_ns[slot] += clock() - started
                if candidate is chosen:
                    written = out
            self._retimed += 1
            fastest = min(range(k), key=self._retimed_ns.__getitem__)
            current = next(slot for slot in range(k) if self.candidates[self._admitted[slot]] is chosen)
            if self._retimed_ns[fastest] * (1 + PREFER_MARGIN) < self._retimed_ns[current]:
                self.chosen = self.candidates[self._admitted[fastest]]
                self.switches.append((self._count, self.chosen.key))
            return written


def zlib_engine(choice: str | None = None, page_size: int = 4096) -> ZlibEngine:
    """The engine for ``choice`` (``auto``: the fastest installed, timed on the first pages; ``isal``,
    ``libdeflate``, ``stdlib``: that one), by default from ``$KEXECFW_ZLIB_ENGINE``."""
    choice = choice or os.environ.get(ENGINE_ENV) or "auto"
    if choice not in ENGINE_CHOICES:
        raise BadInputError(f"${ENGINE_ENV}={choice!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if choice == "stdlib":
        return ZlibEngine([_stdlib()], page_size)
    installed = [c for c in (_isal(page_size), _libdeflate(page_size)) if c is not None]
    if choice == "auto":
        return ZlibEngine(installed + [_stdlib()], page_size)
    forced = [c for c in installed if c.key == choice]
    if not forced:
        package = "isal" if choice == "isal" else "deflate"
        raise BadInputError(f"${ENGINE_ENV}={choice} needs the {package} module, not installed here "
                            f"(pip install {package}); or use auto or stdlib")
    return ZlibEngine(forced, page_size)
