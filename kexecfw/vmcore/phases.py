"""Where a save's time goes: seconds and pages per phase, always on (a clock read per chunk of pages,
not per page), reported by ``vmcore save --json`` as ``phases`` so that the next bottleneck is visible.

Phases of one save, each measured on the thread that runs the save so that they add up to its wall time:
``open`` (the dump's headers and notes read), ``summary`` (the crash summary read first: the panic CPU),
``classify`` (the page bitmaps: struct page reads and classification), ``read`` (the kept pages' data),
``compress`` (zero-page test and compression; with a thread pool, the time spent waiting for it, its
threads' own time in ``thread_seconds``), ``write`` (page descriptors and data written), ``sync``
(written back to the disk) and ``other``.
Each phase has its wall time (``seconds``) and the CPU time of the save's thread in it (``cpu_seconds``:
on a busy machine the wall time also holds other processes' turns on the CPU).
"""
from __future__ import annotations

import os
import time

ORDER = ("open", "summary", "classify", "read", "compress", "write", "sync", "other")


def mark() -> tuple[float, float]:
    """Now, as (wall clock, this thread's CPU time)."""
    return time.perf_counter(), time.thread_time()


def process_age() -> float | None:
    """Seconds since this process started (the kernel's start time, in clock ticks: 10 ms steps), or
    None where /proc cannot say. Before a save starts, that is the interpreter's start-up and imports:
    with it, a save's wall time splits into start-up, the phases and what follows them (exit)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class PhaseTimes:
    """Seconds and pages per phase, added to as the save goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.pages: dict[str, int] = {}
        self.thread_seconds: dict[str, float] = {}

    def add(self, phase: str, since: tuple[float, float], pages: int = 0) -> None:
        """Time from ``since`` (a :func:`mark`) to now was spent in ``phase``, on ``pages`` pages."""
        wall, cpu = mark()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + wall - since[0]
        self.cpu_seconds[phase] = self.cpu_seconds.get(phase, 0.0) + cpu - since[1]
        self.pages[phase] = self.pages.get(phase, 0) + pages

    def add_thread_time(self, phase: str, seconds: float) -> None:
        """Time a pool's threads spent in ``phase`` (not on the save's thread: not part of its wall time)."""
        self.thread_seconds[phase] = self.thread_seconds.get(phase, 0.0) + seconds

    def report(self, since: tuple[float, float] | None = None) -> list[dict]:
        """The phases in order as [{name, seconds, cpu_seconds, pages}]; with ``since`` (the save's
        start, a :func:`mark`), what no phase covers is ``other``."""
        seconds, cpu = dict(self.seconds), dict(self.cpu_seconds)
        if since is not None:
            wall_now, cpu_now = mark()
            seconds["other"] = seconds.get("other", 0.0) + max(0.0, wall_now - since[0] - sum(self.seconds.values()))
            cpu["other"] = cpu.get("other", 0.0) + max(0.0, cpu_now - since[1] - sum(self.cpu_seconds.values()))
        names = [n for n in ORDER if n in seconds] + [n for n in seconds if n not in ORDER]
        out = []
        for name in names:
            entry: dict = {"name": name, "seconds": round(seconds[name], 4),
                           "cpu_seconds": round(cpu.get(name, 0.0), 4), "pages": self.pages.get(name, 0)}
            if name in self.thread_seconds:
                entry["thread_seconds"] = round(self.thread_seconds[name], 4)
            out.append(entry)
        return out
