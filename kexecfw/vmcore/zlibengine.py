"""zlib-format page compression (``vmcore save -c zlib``, the default): the fastest engine installed.

Every reader of a zlib-compressed kdump page (makedumpfile, crash, drgn, libkdumpfile) calls zlib's
``uncompress()`` on it: any engine that writes a standard zlib stream (RFC 1950) will do, whichever
wrote it. Measured on the kept pages of an 807 MiB x86_64 lab vmcore at ``-d 31``, page by page, one
thread (CPU time; docs/vmcore-save-speed.md has the table):

* ISA-L level 1 (the ``isal`` package) takes a third of stdlib zlib level 1's time (what makedumpfile
  -c uses) but is 5.5 % bigger: it finds no match shorter than 4 bytes, and loses most on tables of
  32-bit values that share their top bytes (the kernel's unwind and offset tables: kept at every dump
  level, their size fixed by the kernel, not by its memory), which it leaves at 70-78 % of a page where
  zlib gets about 55 %;
* so the pages ISA-L leaves at 70-78 % (about one in fifteen) are compressed again with libdeflate
  level 2 (the ``deflate`` package, smaller than zlib level 1) and the smaller stream is kept: 1.03x
  makedumpfile -c's file size at 2.4x zlib's compression speed (a wider band, 58-80 %, gets to 1.005x
  at 2.0x).

Both packages are optional, installed where they have wheels (x86_64, aarch64): without them (riscv64)
the retry uses stdlib zlib, or the whole page goes to libdeflate level 2 or, with neither, to stdlib
zlib level 1, as makedumpfile. ``$KEXECFW_ZLIB_ENGINE=stdlib`` forces the standard library (tests,
comparisons). :attr:`ZlibEngine.name` says what ran.
"""
from __future__ import annotations

import os
from typing import Callable

from kexecfw.errors import BadInputError

ENGINE_ENV = "KEXECFW_ZLIB_ENGINE"
ENGINE_CHOICES = ("auto", "stdlib")
# ISA-L's output sizes (fractions of the page) whose page is compressed again by the retry engine
RETRY_FROM, RETRY_BELOW = 0.70, 0.78

Compress = Callable[[bytes], bytes]


class ZlibEngine:
    """What compresses pages to zlib streams: ``name`` says which library and level (for the save's
    summary and --json), ``make()`` gives a compress function (one per thread)."""

    def __init__(self, name: str, make: Callable[[], Compress]) -> None:
        self.name = name
        self.make = make


def _stdlib(level: int) -> tuple[str, Compress]:
    import zlib
    return f"zlib {zlib.ZLIB_RUNTIME_VERSION} level {level}", lambda page: zlib.compress(page, level)


def _libdeflate(level: int) -> tuple[str, Compress] | None:
    try:
        import deflate
    except ImportError:
        return None
    zlib_compress = deflate.zlib_compress
    return (f"libdeflate (deflate {getattr(deflate, '__version__', '?')}) level {level}",
            lambda page: zlib_compress(page, level))


def zlib_engine(choice: str | None = None, page_size: int = 4096) -> ZlibEngine:
    """The engine for ``choice`` (``auto``: the fastest installed; ``stdlib``: the standard library's
    zlib), by default from ``$KEXECFW_ZLIB_ENGINE``."""
    choice = choice or os.environ.get(ENGINE_ENV) or "auto"
    if choice not in ENGINE_CHOICES:
        raise BadInputError(f"${ENGINE_ENV}={choice!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if choice == "stdlib":
        name, fn = _stdlib(1)
        return ZlibEngine(name, lambda: fn)
    try:
        import isal
        from isal.isal_zlib import compress as isal_compress
    except ImportError:
        name, fn = _libdeflate(2) or _stdlib(1)
        return ZlibEngine(name, lambda: fn)
    retry_name, retry = _libdeflate(2) or _stdlib(1)
    lo, hi = int(RETRY_FROM * page_size), int(RETRY_BELOW * page_size)

    def compress(page: bytes) -> bytes:
        out = isal_compress(page, 1)
        if lo <= len(out) < hi:
            again = retry(page)
            if len(again) < len(out):
                return again
        return out
    return ZlibEngine(f"isal {getattr(isal, '__version__', '?')} level 1, {retry_name} where ISA-L leaves "
                      f"{RETRY_FROM:.0%}-{RETRY_BELOW:.0%}", lambda: compress)
