"""Progress of a long command on stderr: a live line on a terminal, plain lines in logs and CI.

One helper for every long command (``lab run``'s phases, ``vmcore save``'s pages):

- live (stderr is a terminal): one line rewritten in place — the current phase, its elapsed time and
  the total, ticking — and each finished phase left above it with its time;
- plain (a log file, CI, a notebook): one line per phase as it starts, with the time since the start,
  and a counter's line at most every ``PLAIN_EVERY`` seconds, so a log stays readable.

Only ``sys``, ``time`` and ``threading`` are imported (capture kernels run ``vmcore save``).
"""
from __future__ import annotations

import sys
import threading
import time

TICK = 0.5              # seconds between redraws of a live line
PLAIN_EVERY = 10.0      # seconds between a counter's plain lines
CLEAR = "\r\x1b[K"      # back to the line's start, erase it


def is_live(stream=None) -> bool:
    """Would progress on ``stream`` (default stderr) be a live line: is it a terminal?"""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Phases and counters of one command, shown on ``stream`` (default stderr).

    ``write``: where plain lines go (default: ``prefix: text`` on the stream); a live line always goes
    to the stream. ``live``: None asks :func:`is_live`.
    """

    def __init__(self, prefix: str, *, live: bool | None = None, stream=None, write=None,
                 clock=time.monotonic) -> None:
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.live = is_live(self.stream) if live is None else live
        self._write = write
        self._clock = clock
        self.start = clock()
        self.phase_name: str | None = None
        self.phase_start = self.start
        self.detail = ""
        self._last_plain = -PLAIN_EVERY
        self._lock = threading.RLock()
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # --- what commands call -------------------------------------------------------------

    def phase(self, name: str) -> None:
        """A new phase starts (the previous one, if any, ends here)."""
        with self._lock:
            now = self._clock()
            if self.live:
                self._finish_phase(now)
            self.phase_name, self.phase_start, self.detail = name, now, ""
            if self.live:
                self._draw(now)
                self._start_ticker()
            else:
                self._plain(f"[{now - self.start:6.1f}s] {name}")

    def update(self, detail: str, force: bool = False) -> None:
        """The current phase's counter (pages saved, ...): redrawn live, a plain line now and then."""
        with self._lock:
            now = self._clock()
            self.detail = detail
            if self.live:
                self._draw(now)
            elif force or now - self._last_plain >= PLAIN_EVERY:
                self._last_plain = now
                self._plain(f"[{now - self.start:6.1f}s] {(self.phase_name + ': ') if self.phase_name else ''}{detail}")

    def note(self, message: str) -> None:
        """A message between progress lines (a download, a warning): never mixed into the live line."""
        with self._lock:
            if self.live:
                self.stream.write(CLEAR)
                self._plain(message)
                self._draw(self._clock())
            else:
                self._plain(message)

    def done(self, message: str) -> None:
        """The command ends: the last phase ends and ``message`` says how it went, with the total time."""
        with self._lock:
            now = self._clock()
            self._stop.set()
            if self.live:
                self._finish_phase(now)
            self.phase_name = None
            self._plain(f"{message} in {now - self.start:.1f} s")
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)

    def close(self) -> None:
        """Stop the live line where it is (an error ends the command): the next output starts clean."""
        with self._lock:
            self._stop.set()
            if self.live and self.phase_name is not None:
                self.stream.write("\n")
                self.stream.flush()
            self.phase_name = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- drawing --------------------------------------------------------------------------

    def _plain(self, text: str) -> None:
        if self._write is not None:
            self._write(text)
        else:
            self.stream.write(f"{self.prefix}: {text}\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        detail = f"  {self.detail}" if self.detail else ""
        return (f"{self.prefix}: {self.phase_name} {now - self.phase_start:5.1f}s{detail}"
                f"  (total {now - self.start:.0f} s)")

    def _draw(self, now: float) -> None:
        if self.phase_name is None:
            return
        self.stream.write(CLEAR + self._line(now))
        self.stream.flush()

    def _finish_phase(self, now: float) -> None:
        if self.phase_name is None:
            return
        detail = f"  {self.detail}" if self.detail else ""
        self.stream.write(f"{CLEAR}{self.prefix}: {self.phase_name} {now - self.phase_start:5.1f}s{detail}\n")
        self.stream.flush()

    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return

        def tick() -> None:
            while not self._stop.wait(TICK):
                with self._lock:
                    self._draw(self._clock())

        self._ticker = threading.Thread(target=tick, name="progress", daemon=True)
        self._ticker.start()
