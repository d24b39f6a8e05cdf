"""``lab run --scenario service``: the kdump service proven on a full-OS Debian guest.

With ``loader="kexecfw"`` the guest runs the README's "Use it on a server" block, line by line as a
person types it (:func:`readme_commands` reads it from README.md, so the two cannot drift):

- boot 1 (no reservation): ``apt-get install`` (the image was built with those packages through the
  lab's apt; the guest has no mirror, so the line is checked, not run: every package must be in the
  image), the venv, ``pip install`` of this checkout's wheel (with ``PIP_NO_INDEX=1``: the guest has
  no internet; the dependencies are in the image's venv already), the symlink, ``kexecfw kdump enable``;
  ``reboot``. The guest boots with ``-kernel`` and has no GRUB, so ``enable`` prints the
  ``crashkernel=`` to add; the host then boots the guest with it (the boot loader edit, done by the
  host: the one simulated step);
- boot 2: the load unit has armed the machine at boot; ``kexecfw kdump status``,
  ``kexecfw kdump test --yes-crash-this-machine``: sysrq-c, the capture kernel boots the real root with
  ``systemd.unit=kexecfw-kdump-save.service``, which saves to /var/crash on the guest's own disk and
  reboots (the QEMU process ends there);
- boot 3: ``kexecfw kdump list``, ``kexecfw kdump status`` (and ``--json`` of both, for the checks).

Then the host reads /var/crash out of the root disk and reads the dump with kexecfw (``vmcore info``,
``dmesg``), ``makedumpfile --dump-dmesg`` (for a foreign guest: the guest architecture's makedumpfile under
qemu-user) and drgn when installed. Those reads must succeed for kexecfw's dump; for kdump-tools' they are
the comparison (on arm64 6.1 its dump is broken: kexec-tools' elfcorehdr), recorded, not required.

With ``loader="kdump-tools"`` the same image plus Debian's kdump-tools (``LOAD_KEXEC=false`` so that a
reboot stays a reboot), booted with the crashkernel= of its own GRUB snippet: boot 1 builds kdump-tools'
initrd and loads (``kdump-config load``), checks ``kdump-config status`` and crashes; its capture boot saves and reboots; boot 2 lists /var/crash.

Lab instrumentation, the same for both and outside the README's commands: a watcher started by a
drop-in of the capture boot's save unit prints the saving process's peak RSS (VmHWM) and the free
memory as ``LABSERVICE`` console lines (time-stamped on the host), and for kexecfw a post hook marks
the moment the dump is saved.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from kexecfw.lab.errors import LabError
from kexecfw.lab.result import LabResult, Phase

README_SECTION = "## Use it on a server"
LOADERS = ("kexecfw", "kdump-tools")
ARCHES = ("x86_64", "arm64")
TARGETS = ("local", "ssh")
GUEST_HOST = "10.0.2.2"     # the host's 127.0.0.1 as QEMU's user-mode network shows it to the guest
MARK = "LABSERVICE"
KDUMP_TOOLS_DEBCONF = ("kexec-tools kexec-tools/load_kexec boolean false",
                       "kdump-tools kdump-tools/use_kdump boolean true")
# kdump-tools' own reservation: what its GRUB snippet adds to the kernel command line
KDUMP_TOOLS_GRUB_SNIPPET = "/etc/default/grub.d/kdump-tools.cfg"
Log = Callable[[str], None]

# Lab instrumentation of the capture boot (see the module doc): the watcher and its drop-in.
WATCHER = "/usr/local/sbin/lab-capture-watch"
WATCHER_TEXT = r"""#!/bin/sh
# lab only: while the capture boot saves, the saving process's peak RSS on the console ($1: kexecfw|kdump-tools;
# kdump-tools falls back to cp of /proc/vmcore when makedumpfile fails)
case "$1" in kexecfw) set -- -f '[k]execfw kdump save' ;; *) set -- -x 'makedumpfile|cp' ;; esac
mark() { printf '\nLABSERVICE %s\n' "$*" > /dev/console; }
avail() { awk '/MemAvailable/{print $2}' /proc/meminfo; }
mark "watch uptime=$(cut -d' ' -f1 /proc/uptime) memtotal_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo) avail_kb=$(avail)"
name() { for kv in $names; do case "$kv" in "$1="*) echo "comm=${kv#*=}" ;; esac; done; }
best=0; seen=""; names=""
while :; do
    now=$(pgrep "$@")
    for pid in $now; do
        hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status 2>/dev/null)
        [ -n "$hwm" ] || continue
        case " $names " in *" $pid="*) ;; *) names="$names $pid=$(cat /proc/$pid/comm 2>/dev/null)" ;; esac
        if [ "$hwm" -gt "$best" ]; then best=$hwm; mark "rss hwm_kb=$best pid=$pid $(name $pid) avail_kb=$(avail)"; fi
    done
    for pid in $seen; do
        case " $now " in *" $pid "*) ;; *) mark "exit pid=$pid $(name $pid) uptime=$(cut -d' ' -f1 /proc/uptime)" ;; esac
    done
    seen=$now
    sleep 0.2
done
"""
SAVE_UNITS = {"kexecfw": "kexecfw-kdump-save.service", "kdump-tools": "kdump-tools-dump.service"}
POST_HOOK = "/etc/kexecfw/kdump-post.d/50-lab-saved"


def readme_path() -> Path:
    return Path(__file__).resolve().parents[2] / "README.md"


def readme_commands(readme: Path | None = None) -> list[str]:
    """The command lines of the first ``sh`` block of the README's "Use it on a server" section."""
    text = (readme or readme_path()).read_text()
    start = text.find(f"\n{README_SECTION}\n")
    if start < 0:
        raise LabError(f"{readme or readme_path()} has no '{README_SECTION}' section")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    if block is None:
        raise LabError(f"the '{README_SECTION}' section of the README has no ```sh block")
    return [line.rstrip() for line in block.group(1).splitlines() if line.strip()]


def step_name(line: str, taken: set[str]) -> str:
    """A step name for a README line: kdump-<action> for kexecfw kdump, else the command's name."""
    words = shlex.split(line, comments=True)
    name = f"kdump-{words[2]}" if words[:2] == ["kexecfw", "kdump"] and len(words) > 2 else \
        os.path.basename(words[0]) if words[0] != "/opt/kexecfw/bin/pip" else "pip-install"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def apt_packages(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    return [w for w in words[2:] if not w.startswith("-")]


def readme_boots(lines: list[str]) -> list[list[tuple[str, str]]]:
    """The README's lines split into boots: after ``reboot`` and after the crash test a new boot starts;
    each line paired with its step name."""
    boots: list[list[tuple[str, str]]] = [[]]
    taken: set[str] = set()
    for line in lines:
        if line.split("#")[0].strip() == "reboot":
            boots.append([])
            continue
        boots[-1].append((step_name(line, taken), line))
        if "--yes-crash-this-machine" in line:
            boots.append([])
            taken = set()
    return [b for b in boots if b]


def _guest_line(name: str, line: str) -> str:
    """run.sh text for one README line: run verbatim by sh -c, except ``apt-get install`` (checked)."""
    if line.startswith("apt-get install"):
        pkgs = " ".join(shlex.quote(p) for p in apt_packages(line))
        return f"lab_step {name} dpkg-query -W -f '${{Package}} ${{Status}}\\n' {pkgs}\n"
    extra = ""
    if line.startswith("kexecfw kdump ") and line.split("#")[0].split()[2] in ("status", "list"):
        extra = f"lab_step {name}-json sh -c {shlex.quote(line.split('#')[0].strip() + ' --json')}\n"
    if "--yes-crash-this-machine" in line:
        return CRASH_PROLOGUE + f"sh -c {shlex.quote(line)} > /dev/console 2>&1\n"
    return f"lab_step {name} sh -c {shlex.quote(line)}\n" + extra


def _instrumentation(loader: str) -> tuple[str, dict[str, bytes]]:
    """run.sh lines (first boot) and script-disk files installing the lab's capture-boot watcher (a drop-in of
    the save unit) and, for kexecfw, a post hook marking the moment the dump is saved."""
    unit = SAVE_UNITS[loader]
    files = {"lab-capture-watch": WATCHER_TEXT.encode(),
             "lab-watch.conf": f"[Service]\nExecStartPre=/bin/sh -c '{WATCHER} {loader} &'\n".encode()}
    lines = (f'install -m 755 "$LAB_SCRIPT_DIR/lab-capture-watch" {WATCHER}\n'
             f'install -D -m 644 "$LAB_SCRIPT_DIR/lab-watch.conf" /etc/systemd/system/{unit}.d/lab-watch.conf\n')
    if loader == "kexecfw":
        files["lab-saved"] = (f"#!/bin/sh\nprintf '\\n{MARK} saved %s uptime=%s\\n' \"$1\" "
                              f"\"$(cut -d' ' -f1 /proc/uptime)\" > /dev/console\n").encode()
        lines += f'install -D -m 755 "$LAB_SCRIPT_DIR/lab-saved" {POST_HOOK}\n'
    return lines, files


# Before a crash in the middle of run.sh: the results disk frozen (ext4 writes its journal out), so the host
# reads every earlier step back; what the crashing command prints goes to the console.
CRASH_PROLOGUE = "lab_mark crash-test\nsync\nfsfreeze -f /run/lab/results\n"


def _marks(boot, prefix: str = MARK) -> list[tuple[float, str]]:
    return [(t, line) for t, line in boot.outcome.host_marks if line.startswith(prefix)]


def _capture_numbers(boot, crash_mark: str) -> dict:
    """Times (host clock of the boot's QEMU) and memory of a boot that crashed and saved in its capture boot."""
    crash = [t for t, line in boot.outcome.host_marks if line.startswith(crash_mark)]
    out: dict = {"crash_at": crash[0] if crash else None, "qemu_end": boot.outcome.seconds}
    hwm = [int(m.group(1)) for _, line in _marks(boot) if (m := re.search(r"rss hwm_kb=(\d+)", line))]
    avail = [int(m.group(1)) for _, line in _marks(boot) if (m := re.search(r"avail_kb=(\d+)", line))]
    total = [int(m.group(1)) for _, line in _marks(boot) if (m := re.search(r"memtotal_kb=(\d+)", line))]
    watch = [t for t, line in _marks(boot) if line.startswith(f"{MARK} watch")]
    saved = [t for t, line in _marks(boot) if line.startswith(f"{MARK} saved")]
    exits = [t for t, line in _marks(boot) if line.startswith(f"{MARK} exit")]
    out["save_processes"] = [m.group(1) for _, line in _marks(boot)
                             if (m := re.search(rf"{MARK} exit .*comm=(\S+)", line))]
    out.update({"peak_rss_kib": max(hwm) if hwm else None, "capture_memtotal_kib": total[0] if total else None,
                "capture_min_avail_kib": min(avail) if avail else None,
                "save_started_at": watch[0] if watch else None,
                "saved_at": saved[-1] if saved else (exits[-1] if exits else None)})
    return out


def _find_dump(crash: Path) -> tuple[Path | None, Path | None]:
    """(dump file, dmesg file) of the newest crash directory: kexecfw's or kdump-tools' layout."""
    dirs = sorted(p for p in crash.iterdir() if p.is_dir()) if crash.is_dir() else []
    for d in reversed(dirs):
        dumps = sorted(p for p in d.iterdir() if p.name.startswith(("vmcore", "dump.")) and p.is_file())
        dmesg = sorted(p for p in d.iterdir() if p.name.startswith("dmesg") and p.is_file())
        if dumps:
            return dumps[0], (dmesg[0] if dmesg else None)
    return None, None


FLATTENED_SIGNATURE = b"makedumpfile\0"   # makedumpfile -F's stream (kdump-tools saves that)
PANIC_LINE = "sysrq: Trigger a crash"


def host_makedumpfile(arch: str, generation: str, cache: Path, log: Log = print) -> list[str] | None:
    """argv of a makedumpfile that reads ``arch``'s dumps on this host: the host's own for its architecture
    (None when not installed); for another architecture the guest's (makedumpfile is built for one
    architecture), from the lab's userland of that generation, run by qemu-user."""
    from kexecfw.lab.targets import arch_target, generation as lab_generation, needs_emulation
    target = arch_target(arch)
    if not needs_emulation(target):
        found = shutil.which("makedumpfile")
        return [found] if found else None
    from kexecfw.lab.userland import prepare_userland
    root = prepare_userland(target, lab_generation(generation), cache, log).root
    return [target.qemu_user, "-L", str(root), str(root / "usr/bin/makedumpfile")]


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:300]


DRGN_CHECK = """\
import sys
import drgn
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.kmem import KernelMemory
p = drgn.Program()
p.set_core_dump(sys.argv[1])
n = 0
with open_dump(sys.argv[1]) as d:
    for r in d.ranges()[:64]:
        size = min(r.end - r.start, 1 << 20)
        assert p.read(r.start, size, True) == d.read_phys(r.start, size), hex(r.start)
        n += size
    info = KernelMemory(d).checked
    name = info.need_symbol("init_uts_ns") + (info.offset("uts_namespace.name", 4096, 390) or 0)
print(n, p.read(name + 2 * 65, 65).split(b"\\0", 1)[0].decode() or "(empty)")
"""


def _host_check(result: LabResult, dump: Path, add, makedumpfile: list[str] | None, required: bool) -> dict:
    """Read the dump on the host with kexecfw, makedumpfile --dump-dmesg and drgn; a flattened dump
    (makedumpfile -F) is reassembled with makedumpfile -R for the last two. Each reader's outcome (and its
    error's last line) goes into the returned ``readers``: the comparison's "what fails when the host reads
    it". ``required``: whether a reader's failure fails the run (kexecfw's dumps: yes; kdump-tools': it is
    what is being compared)."""
    readers: dict[str, dict] = {}

    def reader(name: str, ok: bool, detail: str) -> None:
        readers[name] = {"ok": bool(ok), "detail": detail}
        add(f"host: {name}", ok, required, detail=detail)

    with open(dump, "rb") as f:
        flattened = f.read(len(FLATTENED_SIGNATURE)) == FLATTENED_SIGNATURE
    plain = dump
    if flattened and makedumpfile is not None:
        plain = result.directory / "reassembled.kdump"
        with open(dump, "rb") as src:
            done = subprocess.run([*makedumpfile, "-R", str(plain)], stdin=src, capture_output=True, text=True,
                                  timeout=300)
        reader("makedumpfile -R (the dump is flattened)", done.returncode == 0,
               _last_line(done.stderr) if done.returncode else "")
    py = sys.executable
    info = subprocess.run([py, "-m", "kexecfw", "vmcore", "info", "--json", str(dump)], capture_output=True,
                          text=True, timeout=300)
    (result.directory / "host-vmcore-info.json").write_text(info.stdout)
    reader("kexecfw vmcore info", info.returncode == 0 and result.kernel_release in info.stdout,
           _last_line(info.stderr) if info.returncode else f"{result.kernel_release} found")
    dmesg = subprocess.run([py, "-m", "kexecfw", "vmcore", "dmesg", str(dump)], capture_output=True, text=True,
                           timeout=300)
    (result.directory / "host-dmesg.txt").write_text(dmesg.stdout)
    reader("kexecfw vmcore dmesg has the panic", dmesg.returncode == 0 and PANIC_LINE in dmesg.stdout,
           _last_line(dmesg.stderr) if dmesg.returncode else f"{len(dmesg.stdout.splitlines())} lines")
    if makedumpfile is None:
        add("host: makedumpfile --dump-dmesg", False, False, detail="makedumpfile not installed on the host")
    else:
        out = result.directory / "makedumpfile-dmesg.txt"
        out.unlink(missing_ok=True)
        done = subprocess.run([*makedumpfile, "--dump-dmesg", str(plain), str(out)], capture_output=True,
                              text=True, timeout=300)
        text = out.read_text(errors="replace") if out.is_file() else ""
        reader("makedumpfile --dump-dmesg", done.returncode == 0 and PANIC_LINE in text,
               _last_line(done.stderr or done.stdout) if done.returncode else f"{len(text.splitlines())} lines")
    try:
        import drgn  # noqa: F401
    except ImportError:
        add("host: drgn", False, False, detail="drgn not installed (pip install drgn)")
    else:
        # drgn without the kernel's debug info: its reads of the dump's pages against kexecfw's, then the
        # crashed kernel's release read by virtual address (init_uts_ns, from VMCOREINFO) through drgn's own
        # address translation
        done = subprocess.run([py, "-c", DRGN_CHECK, str(plain)], capture_output=True, text=True, timeout=300)
        words = done.stdout.split()
        ok = done.returncode == 0 and len(words) == 2 and int(words[0]) > 0
        reader("drgn reads the same pages as kexecfw", ok,
               f"{words[0]} bytes" if ok else _last_line(done.stderr or done.stdout))
        if ok:
            reader("drgn reads the release at init_uts_ns", words[1] == result.kernel_release, words[1])
    return {"flattened": flattened, "kexecfw_dmesg_lines": len(dmesg.stdout.splitlines()), "readers": readers}


def run(arch: str = "x86_64", loader: str = "kexecfw", *, keep: str | os.PathLike[str] | None = None,
        mem: int = 1024, smp: int = 2, cache: str | os.PathLike[str] | None = None,
        timeout: float = 900, log: Log = print, target: str = "local") -> LabResult:
    """The service scenario (module doc); a :class:`LabResult` with ok only when every required phase held.
    ``target="ssh"``: the dump goes to an sshd the lab starts on the host's 127.0.0.1 (kexecfw.lab.sshd),
    reached by the guest as 10.0.2.2 through QEMU's user-mode network."""
    from kexecfw.lab.cache import cache_dir
    from kexecfw.lab.fullos import ImageRecipe, base_image
    from kexecfw.lab.fullos_guest import FullOsGuest
    from kexecfw.lab.runner import default_results_dir
    if arch not in ARCHES:
        raise LabError(f"the service scenario runs on {' and '.join(ARCHES)}, not {arch}")
    if loader not in LOADERS:
        raise LabError(f"the service scenario's loader is kexecfw or kdump-tools, not {loader!r}")
    if target not in TARGETS or (target == "ssh" and loader != "kexecfw"):
        raise LabError(f"the service scenario's target is local, or ssh with --loader kexecfw, not {target!r}")
    out = Path(keep) if keep else default_results_dir(f"service-{arch}-{loader}" + ("-ssh" if target == "ssh" else ""))
    if out.exists() and any(out.iterdir()):
        raise LabError(f"results directory {out} exists and is not empty: choose another --keep DIR")
    out.mkdir(parents=True, exist_ok=True)
    cache_path = cache_dir(cache)
    t0 = time.monotonic()
    recipe = ImageRecipe(arch=arch) if loader == "kexecfw" else \
        ImageRecipe(arch=arch, extra_packages=("kdump-tools",), debconf=KDUMP_TOOLS_DEBCONF)
    image = base_image(recipe, cache_path, log)
    phases: list[Phase] = [Phase("full-OS image", True, True, round(time.monotonic() - t0, 2),
                                 f"{image.release}, {len(image.packages)} packages")]
    result = LabResult(directory=out, arch=arch, scenario="service", loader=loader, generation=image.generation,
                       kernel_release=image.release, phases=phases,
                       settings={"mem": mem, "smp": smp, "target": target})

    def add(name: str, ok: bool, required: bool = True, seconds: float | None = None, detail: str = "") -> None:
        phases.append(Phase(name, bool(ok), required, None if seconds is None else round(seconds, 2), detail))

    guest = FullOsGuest(image, out, mem_mib=mem, smp=smp, cache=cache_path, log=log, install_kexecfw=False)
    watcher = _instrumentation(loader)
    numbers: dict = {}
    with ExitStack() as stack:
        server = None
        if target == "ssh":
            from kexecfw.lab.sshd import running_sshd
            try:
                server = stack.enter_context(running_sshd(out / "sshd"))
            except LabError as e:
                add("host sshd on 127.0.0.1", False, True, detail=str(e))
                return _finish(result, phases, guest, numbers, out)
            add("host sshd on 127.0.0.1", True, True, detail=f"port {server.port}, files in {server.dir}")
        _scenario(result, guest, image, cache_path, watcher, add, numbers, timeout, log, server, loader, arch, out)
    return _finish(result, phases, guest, numbers, out)


def _scenario(result, guest, image, cache_path, watcher, add, numbers, timeout, log, server, loader, arch,
              out) -> None:
    from kexecfw.lab.fullos_guest import kexecfw_wheel
    try:
        if loader == "kexecfw":
            _run_kexecfw(guest, image, cache_path, watcher, add, numbers, timeout, log, kexecfw_wheel, server)
        else:
            _run_kdump_tools(guest, watcher, add, numbers, timeout)
        if server is None:
            crash = guest.read_root("/var/crash", out / "root")
            dump, dmesg = _find_dump(crash) if crash else (None, None)
            add("dump on the guest's /var/crash", dump is not None, True,
                detail=f"{dump.relative_to(out)} {dump.stat().st_size} bytes" if dump else "none")
        else:
            dump, dmesg = _find_dump(server.crash)
            add("dump on the host's sshd directory as vmcore.flat", dump is not None and dump.name == "vmcore.flat",
                True, detail=f"{dump.relative_to(out)} {dump.stat().st_size} bytes" if dump else "none")
            summary = dump.parent / "summary.json" if dump else None
            doc = json.loads(summary.read_text()) if summary and summary.is_file() else {}
            add("summary.json on the host says complete", doc.get("complete") is True, True,
                detail=json.dumps(doc.get("dump", {}))[:200])
        if dump is not None:
            numbers["dump"] = str(dump.relative_to(out))
            numbers["dump_bytes"] = dump.stat().st_size
            numbers["saved_files"] = sorted(p.name for p in dump.parent.iterdir())
            mdf = host_makedumpfile(arch, image.generation, cache_path, log)
            numbers.update(_host_check(result, dump, add, mdf, required=(loader == "kexecfw")))
            plain = result.directory / "reassembled.kdump"
            if server is not None and plain.is_file():
                done = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", str(plain)],
                                      capture_output=True, text=True, timeout=300)
                add("host: kexecfw vmcore dmesg of the reassembled dump has the panic",
                    done.returncode == 0 and PANIC_LINE in done.stdout, True,
                    detail=_last_line(done.stderr) if done.returncode else f"{len(done.stdout.splitlines())} lines")
    except LabError as e:
        add("lab", False, True, detail=str(e))


def _finish(result: LabResult, phases: list[Phase], guest, numbers: dict, out: Path) -> LabResult:
    result.ok = all(p.ok for p in phases if p.required)
    failed = [p for p in phases if p.required and not p.ok]
    if failed:
        result.failure = f"{failed[0].name} failed" + (f" ({failed[0].detail})" if failed[0].detail else "")
        if guest.boots:
            result.notes.append("last boot's console tail:\n" + guest.boots[-1].outcome.tail(12))
    result.qemu_seconds = round(sum(b.outcome.seconds for b in guest.boots), 2)
    result.ended_by = guest.boots[-1].outcome.ended_by if guest.boots else None
    result.settings["numbers"] = numbers
    result.notes += _number_notes(numbers)
    (out / "service.json").write_text(json.dumps(numbers, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out / "disks", ignore_errors=True) if result.ok else None
    result.save()
    return result


def _number_notes(n: dict) -> list[str]:
    notes = []
    if n.get("panic_to_saved") is not None or n.get("panic_to_up") is not None:
        notes.append(f"panic -> dump saved {n.get('panic_to_saved')} s, -> capture boot's reboot "
                     f"{n.get('panic_to_reboot')} s, -> machine back up (agent of the next boot) {n.get('panic_to_up')} s")
    if n.get("dump_bytes"):
        notes.append(f"dump {n['dump']}: {n['dump_bytes'] / (1 << 20):.1f} MiB; saved: {', '.join(n['saved_files'])}")
    if n.get("peak_rss_kib"):
        notes.append(f"capture boot: saving process peak RSS {n['peak_rss_kib'] / 1024:.1f} MiB, "
                     f"MemTotal {n['capture_memtotal_kib'] / 1024:.0f} MiB, least MemAvailable "
                     f"{n['capture_min_avail_kib'] / 1024:.0f} MiB")
    for name, r in (n.get("readers") or {}).items():
        if not r["ok"]:
            notes.append(f"host: {name} failed on this dump: {r['detail']}")
    if n.get("crashkernel"):
        notes.append(f"crashkernel={n['crashkernel']} ({n.get('crashkernel_from')}; the host adds it to QEMU's "
                     "-append: the boot loader edit)")
    return notes


def _step_ok(run, name: str, add, phase: str, required: bool = True, rc: int = 0) -> object | None:
    try:
        s = run.step(name)
    except LabError as e:
        add(phase, False, required, detail=str(e).splitlines()[0])
        return None
    add(phase, s.rc == rc, required, s.seconds,
        "" if s.rc == rc else f"exit {s.rc}: {(s.err.strip() or s.out.strip()).splitlines()[-1:]}")
    return s


def _times(boot_crash, boot_after, numbers: dict, crash_mark: str) -> None:
    c = _capture_numbers(boot_crash, crash_mark)
    numbers.update({k: c[k] for k in ("peak_rss_kib", "capture_memtotal_kib", "capture_min_avail_kib",
                                      "save_processes")})
    if c["crash_at"] is not None:
        if c["saved_at"] is not None:
            numbers["panic_to_saved"] = round(c["saved_at"] - c["crash_at"], 1)
        if c["save_started_at"] is not None:
            numbers["panic_to_save_start"] = round(c["save_started_at"] - c["crash_at"], 1)
        numbers["panic_to_reboot"] = round(c["qemu_end"] - c["crash_at"], 1)
        if boot_after is not None and boot_after.agent_seconds is not None:
            numbers["panic_to_up"] = round(c["qemu_end"] - c["crash_at"] + boot_after.agent_seconds, 1)


def ssh_target_edit(path: Path, login: str, port: int) -> str:
    """The sed expression turning the default kdump.toml's local [target] into that ssh one."""
    return f's|^path = "/var/crash"$|path = "{path}"\\nssh = "{login}"\\nssh_port = {port}|'


def _ssh_target_lines(server) -> tuple[str, dict[str, bytes]]:
    """run.sh lines (first boot, after ``enable``) and script-disk files pointing the guest's kdump at the host's
    sshd as an admin would: kdump.toml's [target] edited, then ``kexecfw kdump propagate``, which logs in with
    the key the lab pre-authorized on that sshd (the admin's own key, as ~/.ssh/config names it) to install the
    capture key. (The lab's steps, outside the README's block.)"""
    edit = ssh_target_edit(server.crash, f"{server.user}@{GUEST_HOST}", server.port)
    lines = ('install -D -m 600 "$LAB_SCRIPT_DIR/lab-admin-key" /root/.ssh/lab-admin-key\n'
             "printf 'IdentityFile /root/.ssh/lab-admin-key\\n' > /root/.ssh/config\n"
             f"lab_step ssh-target sh -c {shlex.quote(f'sed -i {shlex.quote(edit)} /etc/kexecfw/kdump.toml && grep -q ^ssh /etc/kexecfw/kdump.toml')}\n"
             "lab_step kdump-propagate kexecfw kdump propagate\n"
             "lab_step kdump-show kexecfw kdump show\n")
    return lines, {"lab-admin-key": server.admin_key.read_bytes()}


def _run_kexecfw(guest, image, cache_path, watcher, add, numbers, timeout, log, kexecfw_wheel,
                 server=None) -> None:
    from kexecfw.lab.fullos_guest import dependency_wheels
    lines = readme_commands()
    boots = readme_boots(lines)
    if len(boots) != 3:
        raise LabError(f"the README's block should make 3 boots (install+enable | status+test | list+status), "
                       f"it makes {len(boots)}")
    for line in lines:
        if line.startswith("apt-get install"):
            missing = [p for p in apt_packages(line) if p not in image.packages]
            add("README apt-get packages are in the image", not missing, True,
                detail=f"missing: {' '.join(missing)}" if missing else " ".join(apt_packages(line)))
    wheel = kexecfw_wheel(cache_path, log)
    # no internet in the guest: what pip would fetch from PyPI (a dependency the image's venv lacks) is on the
    # script disk beside the wheel
    prologue = ('export PIP_NO_INDEX=1 PIP_FIND_LINKS="$LAB_SCRIPT_DIR/wheels" PIP_DISABLE_PIP_VERSION_CHECK=1\n'
                'cd "$LAB_SCRIPT_DIR/wheels"\n')
    ssh_lines, ssh_files = _ssh_target_lines(server) if server is not None else ("", {})
    script1 = watcher[0] + prologue + "".join(_guest_line(n, ln) for n, ln in boots[0]) + ssh_lines \
        + "lab_next reboot\n"
    files = {**watcher[1], **dependency_wheels(image, cache_path), f"wheels/{wheel.name}": wheel, **ssh_files}
    b1 = guest.boot(script1, name="boot1-install-enable", files=files,
                    timeout=timeout)
    r1 = b1.run(1)
    for name, _ in boots[0]:
        _step_ok(r1, name, add, f"boot 1: {name}")
    if server is not None:
        _step_ok(r1, "ssh-target", add, f"boot 1: kdump.toml's [target] set to {server.user}@{GUEST_HOST}:{server.port}")
        _step_ok(r1, "kdump-propagate", add, "boot 1: kdump propagate (key installed in the host's sshd)")
    enable = r1.step("kdump-enable") if "kdump-enable" in r1.steps() else None
    m = re.search(r"crashkernel=(\d+[KMG])", enable.out) if enable else None
    if m is None:
        add("enable says which crashkernel= to add", False, True, detail=(enable.out if enable else "")[-200:])
        return
    size = m.group(1)
    numbers["crashkernel"], numbers["crashkernel_from"] = size, "what `kexecfw kdump enable` asked for"
    add("enable says which crashkernel= to add", True, True, detail=f"crashkernel={size}")

    script2 = "cd /\n" + "".join(_guest_line(n, ln) for n, ln in boots[1])
    b2 = guest.boot(script2, name="boot2-status-test", append=f"crashkernel={size}", timeout=timeout)
    r2 = b2.run(1)
    for name, line in boots[1]:
        if "--yes-crash-this-machine" in line:
            continue   # it crashed: no exit code
        _step_ok(r2, name, add, f"boot 2: {name}")
        if name.startswith("kdump-status"):
            _json_status(r2, f"{name}-json", add, "boot 2", want_selftest=False)
    saved = [line for _, line in b2.outcome.host_marks if line.startswith(f"{MARK} saved")]
    # the post hook runs after a failed save too, with the target itself instead of a crash directory
    # a local dump's directory is <time>; on an ssh host <time>-<host> under target.path
    where = re.escape(f":{server.crash}/") + r"\d{8}-\d{6}(-\d+)?-\S+ " if server is not None else \
        r"/\d{8}-\d{6}(-\d+)? "
    add("capture boot saved the dump (post hook's directory)",
        bool(saved) and re.search(where, saved[-1]) is not None, True,
        detail=saved[-1] if saved else "the post hook did not run")
    add("capture boot rebooted (QEMU exit)", b2.outcome.ended_by == "exit", True, b2.outcome.seconds)

    script3 = "cd /\n" + "".join(_guest_line(n, ln) for n, ln in boots[2])
    b3 = guest.boot(script3, name="boot3-list-status", append=f"crashkernel={size}", timeout=timeout)
    r3 = b3.run(1)
    for name, _ in boots[2]:
        _step_ok(r3, name, add, f"boot 3: {name}")
    listed = _json(r3, "kdump-list-json")
    dumps = (listed or {}).get("dumps") or []
    good = [d for d in dumps if d.get("complete") and "sysrq" in (d.get("panic") or "")]
    add("boot 3: kdump list shows the dump with its panic line", bool(good), True,
        detail=(good[0]["panic"] if good else json.dumps(dumps)[:200]))
    if good:
        numbers["listed"] = good[0]
    status_names = [n for n, _ in boots[2] if n.startswith("kdump-status")]
    for n in status_names:
        _json_status(r3, f"{n}-json", add, "boot 3", want_selftest=True)
    _times(b2, b3, numbers, f"LABAGENT mark crash-test")


def _json(run, name: str) -> dict | None:
    try:
        return json.loads(run.step(name).out)
    except (LabError, ValueError):
        return None


def _json_status(run, name: str, add, where: str, want_selftest: bool) -> None:
    doc = _json(run, name)
    if doc is None:
        add(f"{where}: {name} armed", False, True, detail="no JSON")
        return
    failing = [f"{c['check']}: {c['detail']}" for c in doc.get("checks", []) if c.get("required") and not c.get("ok")]
    add(f"{where}: {name} armed", doc.get("armed") is True and run.step(name).rc == 0, True,
        detail="; ".join(failing)[:300])
    if want_selftest:
        st = doc.get("selftest") or {}
        add(f"{where}: self-test passed", st.get("result") == "passed", True, detail=json.dumps(st)[:200])


def kdump_tools_crashkernel(image) -> str:
    """The crashkernel= value of kdump-tools' GRUB snippet in the image (e.g. 384M-:128M on x86_64)."""
    from kexecfw.lab.fullos_guest import read_ext4_file
    text = read_ext4_file(image.root, KDUMP_TOOLS_GRUB_SNIPPET) or ""
    m = re.search(r"crashkernel=([^\s\"']+)", text)
    if m is None:
        raise LabError(f"the image's {KDUMP_TOOLS_GRUB_SNIPPET} has no crashkernel= (is kdump-tools installed?)")
    return m.group(1)


def _run_kdump_tools(guest, watcher, add, numbers, timeout) -> None:
    """Debian's kdump-tools on the same image: its initrd built on the first boot, load, crash, save, reboot."""
    crashkernel = kdump_tools_crashkernel(guest.image)
    from kexecfw.crashkernel import parse
    if parse(crashkernel, guest.mem_mib << 20, guest.image.arch).size == 0:
        # arm64's snippet starts at 2G: a smaller machine is not armed by kdump-tools' defaults
        raise LabError(f"kdump-tools' crashkernel={crashkernel} reserves nothing on a guest of {guest.mem_mib} MiB: "
                       "give it more memory (--mem)")
    script1 = (watcher[0]
               + "lab_step kdump-config-unload kdump-config unload\n"   # loaded at boot by kdump-tools.service
               "lab_step kdump-config-load kdump-config load\n"
               "lab_step kdump-config-status kdump-config status\n"
               "lab_step kexec-crash-loaded cat /sys/kernel/kexec_crash_loaded\n"
               + CRASH_PROLOGUE + "echo 1 > /proc/sys/kernel/sysrq\necho c > /proc/sysrq-trigger\n")
    b1 = guest.boot(script1, name="boot1-load-crash", files=watcher[1],
                    append=f"crashkernel={crashkernel}", timeout=timeout)
    r1 = b1.run(1)
    _step_ok(r1, "kdump-config-load", add, "boot 1: kdump-config load")
    _step_ok(r1, "kdump-config-status", add, "boot 1: kdump-config status")
    loaded = r1.step("kexec-crash-loaded").out.strip() == "1" if "kexec-crash-loaded" in r1.steps() else False
    add("boot 1: a panic kernel is loaded", loaded, True)
    add("capture boot rebooted (QEMU exit)", b1.outcome.ended_by == "exit", True, b1.outcome.seconds)
    b2 = guest.boot("lab_step ls ls -lR /var/crash\n", name="boot2-list",
                    append=f"crashkernel={crashkernel}",
                    timeout=timeout)
    _step_ok(b2.run(1), "ls", add, "boot 2: ls /var/crash")
    _times(b1, b2, numbers, "LABAGENT mark crash-test")
    numbers["crashkernel"], numbers["crashkernel_from"] = crashkernel, f"kdump-tools' {KDUMP_TOOLS_GRUB_SNIPPET}"
