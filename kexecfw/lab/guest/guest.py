"""Small helpers the lab's guest /init runs with the guest's Python (stdlib only).

    guest.py vmcore-headers VMCORE OUT      copy the ELF header, program headers and notes
    guest.py kallsyms-with-text SRC OUT     kallsyms plus the `_text` line kexec-tools needs
    guest.py fill-memory DISK OUT           fill RAM: anonymous memory and DISK's page cache; stay alive
    guest.py measure OUT OUTPUT CMD...      run CMD; write its wall time, peak RSS, OUTPUT's size to OUT
"""
import json
import os
import struct
import sys
import time

PT_NOTE = 4


def vmcore_headers(src: str, out: str) -> None:
    """Copy /proc/vmcore up to the end of its last note: everything but the memory."""
    with open(src, "rb") as f:
        ehdr = f.read(64)
        if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2:
            sys.exit(f"{src} is not an ELF64 file")
        endian = "<" if ehdr[5] == 1 else ">"
        phoff, = struct.unpack_from(endian + "Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from(endian + "HH", ehdr, 54)
        f.seek(phoff)
        phdrs = f.read(phentsize * phnum)
        end = phoff + phentsize * phnum
        for i in range(phnum):
            p_type, _flags, p_offset, _v, _p, p_filesz = struct.unpack_from(endian + "IIQQQQ", phdrs, i * phentsize)
            if p_type == PT_NOTE:
                end = max(end, p_offset + p_filesz)
        f.seek(0)
        data = f.read(end)
    with open(out, "wb") as o:
        o.write(data)
    print(f"{end} bytes of headers and notes, {phnum} program headers")


def kallsyms_with_text(src: str, out: str) -> None:
    """Add `_text` = `_stext` - 0x10000 (arm64: the 64 KiB head before _stext) when it is missing."""
    with open(src) as f:
        text = f.read()
    symbols = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("_text", "_stext"):
            symbols[parts[2]] = int(parts[0], 16)
    if "_text" not in symbols:
        if "_stext" not in symbols:
            sys.exit("kallsyms has neither _text nor _stext")
        line = "%016x T _text" % (symbols["_stext"] - 0x10000)
        text = line + "\n" + text
        print(f"added '{line}' to kallsyms")
    with open(out, "w") as f:
        f.write(text)


MIB = 1 << 20
# What fill-memory takes of MemAvailable: anonymous memory first, then the data disk's page cache;
# the rest is headroom (no swap: anonymous memory past what is available would meet the OOM killer).
ANON_SHARE, CACHE_SHARE = 0.55, 0.30


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            out[name] = int(rest.split()[0])
    return out


def _pattern(size: int) -> bytes:
    """``size`` bytes whose pages are neither zero nor trivially compressible: each 4 KiB page is
    half random bytes, half a repeated phrase (zlib gets about 2:1, as on real data)."""
    import random
    rng = random.Random(0x6B657866)
    text = (b"kexecfw lab fill: anonymous memory and page cache before the crash. " * 64)[:2048]
    return b"".join(rng.randbytes(2048) + text for _ in range(size // 4096))


def fill_memory(disk: str, out: str) -> None:
    """Fill most of RAM, report what was filled in OUT (JSON), then sleep until the crash.

    Anonymous memory is this process's: half mapped with transparent huge pages allowed (compound
    pages, as THP=always kernels give big allocations), half with MADV_NOHUGEPAGE (4 KiB pages).
    Page cache: DISK (a raw virtio disk) written through the block device's page cache with
    buffered writes, flushed, then read back - clean cached pages of a block device. The disk stays
    open: the kernel drops a block device's page cache when its last opener closes it.
    """
    import mmap
    before = _meminfo()
    block = _pattern(MIB)
    anon_mib = int(before["MemAvailable"] * ANON_SHARE) >> 10
    cache_mib = int(before["MemAvailable"] * CACHE_SHARE) >> 10
    t0 = time.monotonic()
    maps = []
    for advice in (None, getattr(mmap, "MADV_NOHUGEPAGE", None)):
        size = (anon_mib // 2) * MIB
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if advice is not None:
            m.madvise(advice)
        for at in range(0, size, MIB):
            m[at:at + MIB] = block
        maps.append(m)
    t1 = time.monotonic()
    fd = os.open(disk, os.O_RDWR)
    disk_mib = os.lseek(fd, 0, os.SEEK_END) // MIB
    cache_mib = min(cache_mib, disk_mib)
    for i in range(cache_mib):
        os.pwrite(fd, block, i * MIB)
    os.fsync(fd)
    for i in range(cache_mib):
        os.pread(fd, MIB, i * MIB)
    t2 = time.monotonic()
    after = _meminfo()
    report = {"anon_mib": len(maps) * (anon_mib // 2), "page_cache_mib": cache_mib,
              "anon_seconds": round(t1 - t0, 2), "page_cache_seconds": round(t2 - t1, 2),
              "meminfo_before_kib": {k: before.get(k) for k in ("MemTotal", "MemFree", "MemAvailable")},
              "meminfo_after_kib": {k: after.get(k) for k in ("MemTotal", "MemFree", "MemAvailable", "Cached",
                                                              "AnonPages", "AnonHugePages", "Buffers")}}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.rename(tmp, out)           # the guest's /init waits for OUT to appear
    while True:                   # keep the anonymous memory until the crash
        time.sleep(3600)


def _vm_hwm(pid: int | str) -> int | None:
    """VmHWM (peak RSS, KiB) of a live process; None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure(out: str, output: str, argv: list[str], poll: float = 0.05) -> int:
    """Run argv; write {rc, seconds, max_rss_kib, output_bytes} to OUT; return argv's exit code.

    Peak RSS: wait4's ru_maxrss (GNU time's %M; busybox time's %M is that times 4 on 4 KiB pages)
    cannot be below this wrapper's own peak: exec keeps the larger of the parent's and the new
    program's high-water marks. So when ru_maxrss is above the wrapper's peak it is the answer;
    otherwise the command's own VmHWM (a high-water mark too), polled every ``poll`` s until it
    exits, is: exact unless the peak came in the last interval.
    """
    t0 = time.monotonic()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    polled = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        polled = max(polled, _vm_hwm(pid) or 0)
        time.sleep(poll)
    seconds = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    size = os.stat(output).st_size if os.path.isfile(output) else None
    floor = _vm_hwm("self") or 0            # this wrapper's peak, at least what it was at the spawn
    peak = max(usage.ru_maxrss, polled) if usage.ru_maxrss > floor else polled
    with open(out, "w") as f:
        json.dump({"rc": rc, "seconds": round(seconds, 3), "max_rss_kib": peak, "ru_maxrss_kib": usage.ru_maxrss,
                   "polled_vmhwm_kib": polled, "wrapper_kib": floor, "output_bytes": size, "command": argv},
                  f, indent=1)
    return rc


if __name__ == "__main__":
    commands = {"vmcore-headers": vmcore_headers, "kallsyms-with-text": kallsyms_with_text,
                "fill-memory": fill_memory}
    if len(sys.argv) >= 5 and sys.argv[1] == "measure":
        sys.exit(measure(sys.argv[2], sys.argv[3], sys.argv[4:]))
    if len(sys.argv) != 4 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2], sys.argv[3])
