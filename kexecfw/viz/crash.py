"""Figures of a crash: the elfcorehdr against RAM, each CPU's registers at the crash, the log's tail.

Each ``draw_*`` returns a matplotlib Figure (headless-safe). ``read_crash_notes`` gathers what
``kexecfw vmcore notes`` shows (the same readers: NT_PRSTATUS, the kernel's kallsyms in the dump,
the panic line of the log) into plain data the figures take.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kexecfw.viz.render import legend, set_address_ticks
from kexecfw.viz.scale import AddressScale
from kexecfw.viz.scale import size_text as _size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kexecfw.memory.model import MemoryMap

PT_LOAD, PT_NOTE = 1, 4
ARCH_NAMES = {62: "x86_64", 183: "arm64"}


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


# --- elfcorehdr ---------------------------------------------------------------------------------

def draw_elfcorehdr(phdrs: list, memmap: "MemoryMap | None" = None, title: str = "") -> "Figure":
    """The elfcorehdr's program headers over the memory map: what the capture kernel will read.

    Rows: System RAM and the crash region (from ``memmap``), the PT_LOADs of RAM, the PT_LOAD of the
    kernel's text (it lies inside a RAM one), and the PT_NOTEs (per-CPU crash notes, VMCOREINFO).
    ``phdrs``: ProgramHeader tuples (``ctx.artifacts["elfcorehdr_phdrs"]`` or a vmcore's header).
    """
    from kexecfw.memory.model import RegionKind
    from kexecfw.viz.bars import Box, Row
    from kexecfw.viz.palette import ELFCORE_COLOURS, REGION_NAMES, region_colour
    loads = [p for p in phdrs if p.type == PT_LOAD and p.memsz]
    # /proc/vmcore merges the notes into one PT_NOTE with no physical address: not on this axis
    notes = [p for p in phdrs if p.type == PT_NOTE and p.memsz and p.paddr]
    # the kernel-text PT_LOAD maps (virtually) part of RAM another PT_LOAD covers too
    text = [p for p in loads if any(q is not p and q.paddr <= p.paddr and p.paddr + p.memsz <= q.paddr + q.memsz
                                    for q in loads)]
    ram_loads = [p for p in loads if p not in text]
    ram = [r for r in (memmap.regions if memmap else []) if r.depth == 0 and r.kind is RegionKind.RAM]
    crash = list(memmap.crash_regions) if memmap else []
    spans = ([(r.start, r.end) for r in ram] + [(c.start, c.end) for c in crash]
             + [(p.paddr, p.paddr + p.memsz) for p in loads + notes])
    scale = AddressScale([b for s in spans for b in s], spans)
    rows = ((["System RAM, crash region"] if memmap else []) + ["PT_LOAD: RAM"]
            + (["PT_LOAD: kernel text"] if text else []) + (["PT_NOTE"] if notes else []))
    y = {name: len(rows) - 1 - i for i, name in enumerate(rows)}
    fig = _figure(13, 1.5 + 0.8 * len(rows))
    ax = fig.add_subplot()
    row = {name: Row(ax, scale, y[name]) for name in rows}
    def holds_crash(r) -> bool:
        return any(r.start <= c.start < r.end for c in crash)

    for r in ram:   # one that holds the crash region is labelled at its left end (below)
        row[rows[0]].add(Box(r.start, r.end, region_colour(RegionKind.RAM),
                             "" if holds_crash(r) else f"RAM {_size(r.size)}", REGION_NAMES[RegionKind.RAM]))
    for c in crash:
        row[rows[0]].add(Box(c.start, c.end, region_colour(RegionKind.CRASH), f"crash {_size(c.size)}\n(not dumped)",
                             REGION_NAMES[RegionKind.CRASH]))
    for p in sorted(ram_loads, key=lambda p: p.paddr):
        row["PT_LOAD: RAM"].add(Box(p.paddr, p.paddr + p.memsz, ELFCORE_COLOURS["PT_LOAD (RAM)"],
                                    f"PT_LOAD {_size(p.memsz)}", "PT_LOAD (RAM)"))
    for p in text:
        row["PT_LOAD: kernel text"].add(Box(p.paddr, p.paddr + p.memsz, ELFCORE_COLOURS["PT_LOAD (kernel text)"],
                                            f"text {_size(p.memsz)}", "PT_LOAD (kernel text)"))
    biggest = max(notes, key=lambda p: p.memsz) if notes else None
    for p in sorted(notes, key=lambda p: p.paddr):
        what = "VMCOREINFO" if p is biggest and len(notes) > 1 else "CPU crash note"
        row["PT_NOTE"].add(Box(p.paddr, p.paddr + p.memsz, ELFCORE_COLOURS[what], _size(p.memsz), what))
    seen: set[str] = set()
    for r in row.values():
        r.draw(seen)
    for r in filter(holds_crash, ram):   # the crash region is drawn over its middle
        ax.text(scale(r.start) + 0.15, y[rows[0]], f"RAM {_size(r.size)}", ha="left", va="center", fontsize=7)
    set_address_ticks(ax, scale, [s for s, _ in spans] + [max(e for _, e in spans)] if spans else [],
                      first={b for c in crash for b in (c.start, c.end)})
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(list(y.values()), list(y.keys()), fontsize=8)
    ax.set_xlim(0, scale.width)
    ax.set_xlabel("physical address (broken axis: width grows with log of size)", fontsize=8)
    merged = len([p for p in phdrs if p.type == PT_NOTE]) - len(notes)
    ax.set_title((title or f"elfcorehdr: {len(loads)} PT_LOAD, {len(notes)} PT_NOTE")
                 + (f" ({merged} PT_NOTE without a physical address not drawn)" if merged else ""), fontsize=10)
    legend(ax, [ax])
    return fig


# --- CPU registers and the log --------------------------------------------------------------------

@dataclass
class CpuRow:
    cpu: int
    pid: int
    panic: bool
    pc: int | None
    sp: int | None
    lr: int | None
    pc_symbol: str | None = None
    lr_symbol: str | None = None


@dataclass
class CrashNotes:
    """What a dump says about the crash: each CPU's pc/sp/lr with symbols, the panic, the log's tail."""

    source: str
    arch: str
    osrelease: str | None
    cpus: list[CpuRow]
    panic: tuple[int, int, str] | None
    cpu_mapping: str                      # how CPU numbers were found
    log_tail: list[str] = field(default_factory=list)


def read_crash_notes(path: "str | list[str]", online_cpus: str | None = None, symbols: bool = True,
                     tail: int = 30) -> CrashNotes:
    """Read a dump's NT_PRSTATUS notes, name pc/lr with the kernel's kallsyms, and keep the log's tail."""
    from kexecfw.errors import KexecfwError
    from kexecfw.vmcore import open_dump
    from kexecfw.vmcore.dmesg import dmesg_bytes
    from kexecfw.vmcore.kmem import KernelMemory
    from kexecfw.vmcore.prstatus import describe_cpus
    online = None
    if online_cpus:
        from kexecfw.sysroot import parse_cpu_list
        online = parse_cpu_list(online_cpus)
    with open_dump(path) as dump:
        try:
            log = dmesg_bytes(KernelMemory(dump))
        except KexecfwError:
            log = None
        states, known, panic, ksyms, exact = describe_cpus(dump, online, log, symbols)
        try:
            release = dump.vmcoreinfo.osrelease
        except KexecfwError:
            release = None
        machine = dump.machine
        source = dump.path if isinstance(dump.path, str) else str(path)

    def sym(v: int | None) -> str | None:
        return ksyms.lookup(v) if ksyms is not None and v is not None else None

    rows = [CpuRow(s.cpu, s.pid, s.panic, s.pc, s.sp, s.lr, sym(s.pc), sym(s.lr)) for s in states]
    mapping = ("from the per-CPU crash note buffers in the dump" if exact else
               "from --online-cpus" if known else "assumed 0..n-1 (every CPU online)")
    lines = log_tail(log.decode("utf-8", "replace") if log else "", tail)
    return CrashNotes(source, ARCH_NAMES.get(machine, f"machine {machine}"), release, rows, panic, mapping, lines)


def log_tail(text: str, limit: int = 30) -> list[str]:
    """The log from just before its last crash trigger or panic line (at most ``limit`` lines)."""
    lines = text.rstrip().splitlines()
    starts = [i for i, ln in enumerate(lines) if "sysrq: Trigger a crash" in ln or "Kernel panic" in ln
              or "Unable to handle" in ln or "BUG:" in ln]
    first = max(starts[-1] - 2, 0) if starts else max(len(lines) - limit, 0)
    return lines[first:first + limit]


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


def _draw_registers_on(ax: "object", notes: CrashNotes) -> None:
    has_lr = any(c.lr is not None for c in notes.cpus)
    headers = ["CPU", "PID", "pc", "pc symbol"] + (["lr", "lr symbol"] if has_lr else []) + ["sp"]
    cells = []
    for c in notes.cpus:
        row = [f"{c.cpu}" + (" (panic)" if c.panic else ""), str(c.pid), _hex(c.pc), c.pc_symbol or "?"]
        if has_lr:
            row += [_hex(c.lr), c.lr_symbol or "?"]
        cells.append(row + [_hex(c.sp)])
    ax.axis("off")
    if not cells:
        ax.text(0.5, 0.5, "no NT_PRSTATUS notes in this dump", ha="center", va="center")
        return
    tab = ax.table(cellText=cells, colLabels=headers, loc="upper center", cellLoc="left", colLoc="left")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width(list(range(len(headers))))
    tab.scale(1, 1.4)
    for (r, _), cell in tab.get_celld().items():
        cell.get_text().set_family("monospace")
        if r == 0:
            cell.set_facecolor("#deebf7")
            cell.get_text().set_weight("bold")
        elif notes.cpus[r - 1].panic:
            cell.set_facecolor("#fcbba1")
    panic = (f"panic on CPU {notes.panic[0]}, PID {notes.panic[1]} ({notes.panic[2]})" if notes.panic
             else "no panic line in the log")
    ax.set_title(f"registers at the crash ({notes.arch}, {notes.osrelease or 'unknown kernel'}): {panic}; "
                 f"CPU numbers {notes.cpu_mapping}", fontsize=9)


def draw_cpu_registers(notes: CrashNotes) -> "Figure":
    """One table row per CPU: pc/lr with their kernel symbols, sp; the panicking CPU highlighted."""
    fig = _figure(13, 0.6 + 0.3 * (len(notes.cpus) + 1))
    _draw_registers_on(fig.add_subplot(), notes)
    return fig


HIGHLIGHT = ("Kernel panic", "sysrq: Trigger a crash", "Call trace", "Unable to handle", "BUG:", "Oops",
             "RIP:", "pc :", "lr :")


def _draw_log_on(ax: "object", lines: list[str], title: str, width: int = 150) -> None:
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(len(lines), 1))
    for i, line in enumerate(lines):
        text = line if len(line) <= width else line[:width - 1] + "…"
        hot = any(h in line for h in HIGHLIGHT)
        ax.text(0.0, len(lines) - i - 0.5, text, family="monospace", fontsize=7, va="center",
                color="#a50f15" if hot else "black", weight="bold" if hot else "normal")
    if not lines:
        ax.text(0.5, 0.5, "no log in this dump", ha="center", va="center")
    ax.set_title(title, fontsize=9, loc="left")


def draw_dmesg_tail(lines: list[str], title: str = "the crashed kernel's log (tail)") -> "Figure":
    """The last lines of the crashed kernel's log, the panic and oops lines in red."""
    fig = _figure(13, 0.6 + 0.17 * max(len(lines), 1))
    _draw_log_on(fig.add_subplot(), lines, title)
    return fig


def draw_crash_notes(notes: CrashNotes, tail: int = 24) -> "Figure":
    """Registers per CPU above the log's tail: the picture ``kexecfw vmcore notes --plot`` writes."""
    lines = notes.log_tail[:tail]
    top = 0.6 + 0.3 * (len(notes.cpus) + 1)
    bottom = 0.6 + 0.17 * max(len(lines), 1)
    fig = _figure(13, top + bottom)
    grid = fig.add_gridspec(2, 1, height_ratios=[top, bottom])
    _draw_registers_on(fig.add_subplot(grid[0]), notes)
    _draw_log_on(fig.add_subplot(grid[1]), lines, f"the crashed kernel's log from the crash on ({len(lines)} lines)")
    return fig
