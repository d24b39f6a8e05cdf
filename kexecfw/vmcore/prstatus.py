"""NT_PRSTATUS notes of a crash dump: one per CPU that saved its registers at the crash.

Layout: ``struct elf_prstatus`` (include/uapi/linux/elfcore.h, 64-bit):
``pr_info`` (3 ints), ``pr_cursig`` (short, padded), ``pr_sigpend``, ``pr_sighold``
(unsigned long), ``pr_pid``, ``pr_ppid``, ``pr_pgrp``, ``pr_sid`` (int), four
``struct timeval``, then ``pr_reg`` at offset 112: the architecture's general
registers as unsigned longs, whose names (and which of them are the program counter, stack
pointer and link register) come from the architecture plugin's capture module
(:mod:`kexecfw.machines`), then ``pr_fpvalid``.

Which CPU a note belongs to
---------------------------
The note does not say. /proc/vmcore merges the elfcorehdr's per-CPU PT_NOTEs in
CPU order (kexec-tools and kexec_file_load both emit one per possible CPU, in
increasing CPU number), and drops the empty buffers of CPUs that saved nothing
(offline at the crash). So the i-th NT_PRSTATUS belongs to the i-th CPU that
was online when the kernel crashed. Pids cannot tell CPUs apart (every idle task
has pid 0). The exact answer is in memory: each CPU's crash note buffer
(``crash_notes`` + ``__per_cpu_offset[cpu]``, found with the kernel's own kallsyms
tables) holds the very note /proc/vmcore copied, so :func:`cpus_from_memory`
matches them. Without symbols (kernels before 6.0, filtered dumps),
:func:`assign_cpus` maps by position over the crashed kernel's online CPU list when
it is known (``--online-cpus``, or a snapshot of its ``sys/devices/system/cpu/online``)
and over 0..n-1 otherwise, flagging the mapping as assumed. The panicking CPU comes from the log: the last
"Kernel panic - not syncing" is followed by dump_stack()'s ``CPU: N ... PID: P``
line; the note whose ``pr_pid`` is P confirms it.
"""
from __future__ import annotations

import re
import struct

from kexecfw.elfnotes import Note
from kexecfw.errors import BadInputError
from kexecfw.machines import RegisterLayout, machine_capture
from kexecfw.records import Record, fresh

# struct elf_prstatus up to pr_reg: elf_siginfo {si_signo, si_code, si_errno}, pr_cursig (+2 pad),
# pr_sigpend, pr_sighold, pr_pid, pr_ppid, pr_pgrp, pr_sid, pr_utime, pr_stime, pr_cutime, pr_cstime
ELF_PRSTATUS_HEAD = struct.Struct("<iiih2xQQiiii16s16s16s16s")
PR_REG_OFFSET = 112
assert ELF_PRSTATUS_HEAD.size == PR_REG_OFFSET

PANIC_LINE = re.compile(rb"Kernel panic - not syncing")
DUMP_STACK_LINE = re.compile(rb"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: ([^\n ]*)")


class CpuState(Record):
    index: int                    # position among the NT_PRSTATUS notes
    cpu: int                      # CPU number (see the module docstring for how it is chosen)
    pid: int
    signal: int
    registers: dict[str, int] = fresh(dict)
    panic: bool = False
    roles: dict[str, str] = fresh(dict)     # "pc"/"sp"/"lr" -> the register that holds it

    def role(self, role: str) -> int | None:
        name = self.roles.get(role)
        return None if name is None else self.registers.get(name)

    @property
    def pc(self) -> int | None:
        return self.role("pc")

    @property
    def sp(self) -> int | None:
        return self.role("sp")

    @property
    def lr(self) -> int | None:
        return self.role("lr")


def parse_prstatus(note: Note, index: int, register_names: "RegisterLayout | list[str] | None") -> CpuState:
    """One NT_PRSTATUS note; ``register_names`` is the architecture's layout (kexecfw.machines), whose
    roles give ``pc``/``sp``/``lr`` (a plain list of names gives the registers only)."""
    desc = note.desc
    if len(desc) < PR_REG_OFFSET:
        raise BadInputError(f"NT_PRSTATUS note #{index} at file offset {note.offset:#x} is {len(desc)} bytes, "
                            f"shorter than its {PR_REG_OFFSET}-byte header")
    head = ELF_PRSTATUS_HEAD.unpack_from(desc)
    signo, cursig, pid = head[0], head[3], head[6]
    regs: dict[str, int] = {}
    if register_names:
        need = PR_REG_OFFSET + 8 * len(register_names)
        if len(desc) < need:
            raise BadInputError(f"NT_PRSTATUS note #{index} at file offset {note.offset:#x} is {len(desc)} bytes; "
                                f"{len(register_names)} registers need {need}: wrong architecture?")
        values = struct.unpack_from(f"<{len(register_names)}Q", desc, PR_REG_OFFSET)
        regs = dict(zip(register_names, values))
    roles = register_names.roles() if isinstance(register_names, RegisterLayout) else {}
    return CpuState(index=index, cpu=index, pid=pid, signal=cursig or signo, registers=regs, roles=roles)


# Lines that start a crash's story (kernel/panic.c, lib/bug.c, arch die()/oops, drivers/tty/sysrq.c);
# with kdump loaded an oops goes to crash_kexec() without a "Kernel panic" line, so they name it then.
CAUSE_MARKERS = (b"sysrq: Trigger a crash", b"BUG:", b"Oops", b"Internal error:", b"Unable to handle kernel",
                 b"general protection fault", b"kernel BUG at", b"Kernel BUG at", b"watchdog: BUG")
TIMESTAMP = re.compile(rb"^\[\s*\d+\.\d+\] ")
LOG_TAIL = 256 << 10           # the crash is at the end of the log; a full ring is not read for it
CAUSE_WINDOW = 100             # lines before the panic line searched for its cause
LEAD_LINES = 4                 # lines of the cause shown, before its register dump and call trace
# where a cause's first lines end: the dump_stack() header, register dumps and traces
DETAIL_START = re.compile(rb"^(CPU: \d+ |Hardware name:|Modules linked in:|Call [Tt]race:|pc : |RIP: |"
                          rb"\S+: [0-9a-f]{8,}|-+\[ cut here \]|Workqueue:|Kernel panic)")


class PanicReport(Record):
    """Why the kernel crashed, from its log: the panic line, where it happened and what led to it."""
    line: str                     # "Kernel panic - not syncing: ..." (or the oops line), without timestamp
    cpu: int | None = None        # from dump_stack()'s "CPU: N ... PID: P Comm: C" header
    pid: int | None = None
    comm: str | None = None
    lead: list[str] = fresh(list)    # the log lines that led to it, as printed

    def to_json(self) -> dict:
        return {"line": self.line, "cpu": self.cpu, "pid": self.pid, "comm": self.comm, "lead": self.lead}

    def task(self) -> str | None:
        """"CPU 2, PID 1 (init)" when the log names them."""
        if self.cpu is None:
            return None
        return f"CPU {self.cpu}, PID {self.pid} ({self.comm})"


def _text(line: bytes) -> bytes:
    return TIMESTAMP.sub(b"", line, count=1)


def panic_report(log: bytes | str) -> PanicReport | None:
    """The crash in ``log`` (the crashed kernel's dmesg): the last "Kernel panic - not syncing" line,
    else the last oops/BUG line; the task from the dump_stack() header after it (or after its cause);
    the cause's first lines (sysrq, BUG, Oops, ... up to the register dump). None without either."""
    if isinstance(log, str):
        log = log.encode("utf-8", "replace")
    lines = log[-LOG_TAIL:].splitlines()
    texts = [_text(ln) for ln in lines]
    at = next((i for i in range(len(texts) - 1, -1, -1) if PANIC_LINE.match(texts[i])), None)
    first = max(0, (at if at is not None else len(texts)) - CAUSE_WINDOW)
    causes = [i for i in range(first, at if at is not None else len(texts)) if texts[i].startswith(CAUSE_MARKERS)]
    if at is None:             # no panic line: the cause names the crash, its next lines tell the story
        if not causes:
            return None
        at = causes[0]
    cause = causes[0] if causes else None
    lead: list[bytes] = []
    if cause is not None:
        for i in range(cause, min(len(texts) if cause == at else at, cause + LEAD_LINES)):
            if i > cause and DETAIL_START.match(texts[i]):
                break
            lead.append(lines[i])
    elif at > 0 and not DETAIL_START.match(texts[at - 1]):
        lead.append(lines[at - 1])
    task = None
    for start in ([at, cause] if cause is not None else [at]):
        for i in range(start, min(len(texts), start + 12)):
            task = DUMP_STACK_LINE.search(texts[i])
            if task:
                break
        if task:
            break
    text = texts[at].decode("utf-8", "replace").strip()[:300]
    lead_text = [ln.decode("utf-8", "replace").rstrip()[:300] for ln in lead if ln is not lines[at]]
    if task is None:
        return PanicReport(text, lead=lead_text)
    return PanicReport(text, int(task[1]), int(task[2]), task[3].decode("utf-8", "replace"), lead_text)


def panic_from_log(log: bytes) -> tuple[int, int, str] | None:
    """(cpu, pid, comm) of the panic, from the last panic line and the dump_stack() header after it."""
    report = panic_report(log)
    if report is None or report.cpu is None:
        return None
    return report.cpu, report.pid, report.comm


def assign_cpus(states: list[CpuState], online: list[int] | None,
                panic: tuple[int, int, str] | None, exact: list[int] | None = None) -> bool:
    """Set ``cpu`` and ``panic`` on each state; return True when the CPU numbers are known, not assumed.

    ``exact``: the CPU of each note from :func:`cpus_from_memory` (wins over ``online``).
    """
    if exact is not None and len(exact) == len(states):
        online = exact
    known = online is not None and len(online) == len(states)
    cpus = online if known else list(range(len(states)))
    for st, cpu in zip(states, cpus):
        st.cpu = cpu
    if panic is not None:
        cpu, pid, _ = panic
        by_cpu = [s for s in states if s.cpu == cpu]
        if by_cpu and by_cpu[0].pid == pid:
            by_cpu[0].panic = True
        else:
            by_pid = [s for s in states if s.pid == pid]
            if len(by_pid) == 1:
                # The log names the CPU; trust it over the position.
                by_pid[0].cpu = cpu
                by_pid[0].panic = True
            elif by_cpu:
                by_cpu[0].panic = True
    return known


def cpus_from_memory(mem, ksyms, notes: list[Note], max_cpus: int = 8192) -> list[int] | None:
    """Each note's CPU number, found by matching it with the per-CPU crash note buffers in memory.

    ``crash_notes`` (kernel/crash_core.c) is a per-CPU pointer: CPU c's buffer is at
    ``crash_notes + __per_cpu_offset[c]`` and holds exactly the note /proc/vmcore copied.
    Needs the kernel's symbols (kallsyms, 6.0+); None when they or the pages are missing.
    """
    from kexecfw.errors import KexecfwError
    if ksyms is None or not notes:
        return None
    crash_notes = ksyms.address("crash_notes")
    per_cpu_offset = ksyms.address("__per_cpu_offset")
    if crash_notes is None or per_cpu_offset is None:
        return None
    try:
        base = mem.read_u64(crash_notes)
        want = {n.desc: i for i, n in enumerate(notes)}
        size = max(len(n.desc) for n in notes)
        found: dict[int, int] = {}
        for cpu in range(max_cpus):
            off = mem.read_u64(per_cpu_offset + 8 * cpu)
            try:
                # Elf64_Nhdr (12 bytes) + "CORE\0" padded to 8, then the prstatus
                desc = mem.read((base + off) & ((1 << 64) - 1), 20 + size)[20:]
            except KexecfwError:
                continue
            for d, i in want.items():
                if i not in found and desc[:len(d)] == d:
                    found[i] = cpu
                    break
            if len(found) == len(notes):
                return [found[i] for i in range(len(notes))]
    except KexecfwError:
        return None
    return None


def describe_cpus(dump, online: list[int] | None = None, log: bytes | None = None, symbols: bool = True):
    """(states, cpus_known, panic, kallsyms or None, exact) for ``dump``: what ``vmcore notes`` shows."""
    from kexecfw.errors import KexecfwError
    capture = machine_capture(dump.machine)
    names = capture.registers if capture is not None else None
    notes = dump.prstatus_notes()
    states = [parse_prstatus(n, i, names) for i, n in enumerate(notes)]
    panic = panic_from_log(log) if log else None
    ksyms = exact = None
    if symbols:
        from kexecfw.vmcore import kallsyms
        from kexecfw.vmcore.kmem import KernelMemory
        try:
            mem = KernelMemory(dump)
            ksyms = kallsyms.load(mem)
            exact = cpus_from_memory(mem, ksyms, notes)
        except KexecfwError:
            pass
    known = assign_cpus(states, online, panic, exact)
    return states, known, panic, ksyms, exact is not None
