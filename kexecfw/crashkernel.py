"""``crashkernel=``: parse it exactly as the kernel does, and estimate what to reserve.

Parsing follows kernel/crash_core.c (kernel/crash_reserve.c since 6.9):

* the **last** ``crashkernel=`` on the command line wins; the search is a plain
  substring search, and a value ending in a known suffix (``,high``, ``,low``,
  ``,cma``) is skipped when looking for the plain form (and is the only kind
  considered when looking for that suffix);
* ``size[@offset]`` is the simple form; a ``:`` before the first space selects
  the range form ``start-[end]:size[,start-[end]:size...][@offset]``, matched
  against the system RAM **rounded up to 128 MiB** (``start <= ram < end``), and
  every size up to the match must be smaller than that RAM;
* ``size,high`` / ``size,low``: the kernel only uses ``,high`` when there is no
  usable plain form; ``,low`` gives the low part (default 256 MiB on x86_64 —
  in fact max(swiotlb + 8 MiB, 256 MiB) — and 128 MiB on arm64);
* numbers are ``memparse``: C integer syntax with base detection (``0x`` hex,
  leading ``0`` octal) and an optional K, M, G, T, P or E suffix (either case).

Estimate (documented formula, all sizes in bytes, result rounded up to 16 MiB)::

    kernel   = memory the capture kernel image occupies when running:
               x86_64 bzImage: setup header init_size; arm64 Image: header image_size
               (compressed and EFI zboot Images are inflated to read it); any other file
               is refused
    initrd   = compressed size + uncompressed size (both live while it is unpacked)
    runtime  = 64 MiB: kernel slab, page tables, devices, and the user space that saves
               the dump (Python + kexecfw's writer budget, see kexecfw.vmcore.writer)
    cpus     = 1 MiB per CPU the capture kernel brings up (percpu areas, stacks);
               capture kernels usually boot with nr_cpus=1
    bitmaps  = RAM / 16384: the writer's two page bitmaps for the crashed system's RAM
    total    = (kernel + initrd + runtime + cpus + bitmaps) / (1 - 64/4096)
               (the capture kernel's own struct pages: 64 bytes per 4 KiB page)

Checked in the QEMU lab (x86_64, Debian 6.1, 1 GiB guest, capture initramfs with
Python and kexecfw: 16.9 MiB compressed, 42 MiB unpacked): the formula gives 192M;
with crashkernel=192M the capture kernel saved the dump with kexecfw and makedumpfile
(both writing 32 MiB dumps into a RAM tmpfs), with 160M both were OOM-killed. For the
fixtures' guests (busybox initramfs) it gives about 128M (x86_64) and 112M (arm64).
"""
from __future__ import annotations

import struct
from pathlib import Path

from kexecfw.decompress import INITRD_CAP, KERNEL_IMAGE_CAP, decompressed_prefix, decompressed_size, sniff
from kexecfw.errors import BadInputError
from kexecfw.records import Record
from kexecfw.sysroot import NR_CPUS_MAX

SZ_128M = 128 << 20
ULLONG_MAX = (1 << 64) - 1
KNOWN_SUFFIXES = (",high", ",low", ",cma")
DEFAULT_LOW = {"x86_64": 256 << 20, "arm64": 128 << 20}
_SHIFTS = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


class CrashkernelError(BadInputError):
    """A crashkernel= value the kernel would reject (the message is the kernel's reason)."""


def memparse(text: str, pos: int = 0) -> tuple[int, int]:
    """The kernel's memparse() at ``pos``: (value, position after it); position unchanged if no number."""
    start = pos
    base = 10
    if text.startswith(("0x", "0X"), pos) and pos + 2 < len(text) and text[pos + 2] in "0123456789abcdefABCDEF":
        base, pos = 16, pos + 2
    elif text.startswith("0", pos):
        base = 8
    digits = "0123456789abcdef"[:base]
    value = 0
    p = pos
    while p < len(text) and text[p].lower() in digits:
        value = value * base + int(text[p], 16)
        p += 1
    if p == pos and base != 16:
        return 0, start
    if p < len(text) and text[p].lower() in _SHIFTS:
        value <<= _SHIFTS[text[p].lower()]
        p += 1
    return value & ULLONG_MAX, p


def roundup(value: int, step: int) -> int:
    return -(-value // step) * step


def _last(cmdline: str, name: str, suffix: str | None) -> int | None:
    """get_last_crashkernel(): index just after ``name`` of the occurrence to use."""
    found = None
    p = cmdline.find(name)
    while p != -1:
        end = cmdline.find(" ", p)
        if end == -1:
            end = len(cmdline)
        word = cmdline[p:end]
        if suffix is None:
            if not any(word.endswith(s) for s in KNOWN_SUFFIXES):
                found = p
        elif word.endswith(suffix):
            found = p
        p = cmdline.find(name, p + 1)
    return None if found is None else found + len(name)


def _parse_simple(s: str, at: int) -> tuple[int, int | None]:
    size, cur = memparse(s, at)
    if cur == at:
        raise CrashkernelError("crashkernel: memory value expected")
    base = None
    if cur < len(s) and s[cur] == "@":
        base, after = memparse(s, cur + 1)
        if after == cur + 1:
            raise CrashkernelError("crashkernel: memory value expected after '@'")
    elif cur < len(s) and s[cur] != " ":
        raise CrashkernelError(f"crashkernel: unrecognized char: {s[cur]!r}")
    return size, base


def _parse_ranges(s: str, at: int, system_ram: int) -> tuple[int, int | None, tuple[int, int] | None]:
    total = roundup(system_ram, SZ_128M)
    cur = at
    size_found = 0
    matched = None
    while True:
        start, tmp = memparse(s, cur)
        if tmp == cur:
            raise CrashkernelError("crashkernel: Memory value expected")
        cur = tmp
        if cur >= len(s) or s[cur] != "-":
            raise CrashkernelError("crashkernel: '-' expected")
        cur += 1
        end = ULLONG_MAX
        if cur >= len(s) or s[cur] != ":":
            end, tmp = memparse(s, cur)
            if tmp == cur:
                raise CrashkernelError("crashkernel: Memory value expected")
            cur = tmp
            if end <= start:
                raise CrashkernelError("crashkernel: end <= start")
        if cur >= len(s) or s[cur] != ":":
            raise CrashkernelError("crashkernel: ':' expected")
        cur += 1
        size, tmp = memparse(s, cur)
        if tmp == cur:
            raise CrashkernelError("crashkernel: Memory value expected")
        cur = tmp
        if size >= total:
            raise CrashkernelError(f"crashkernel: invalid size ({size >> 20} MiB is not below the "
                                   f"{total >> 20} MiB of RAM)")
        if start <= total < end:
            size_found = size
            matched = (start, end)
            break
        sep = s[cur] if cur < len(s) else ""
        cur += 1
        if sep != ",":
            break
    base = None
    if size_found > 0:
        while cur < len(s) and s[cur] not in " @":
            cur += 1
        if cur < len(s) and s[cur] == "@":
            base, tmp = memparse(s, cur + 1)
            if tmp == cur + 1:
                raise CrashkernelError("crashkernel: Memory value expected after '@'")
    return size_found, base, matched


class Reservation(Record):
    """What the kernel would reserve for ``crashkernel=`` on a system with ``ram`` bytes."""

    size: int = 0
    base: int | None = None          # @offset, None: the kernel chooses
    high: bool = False               # crashkernel=X,high was used
    low: int | None = None           # the low part for a ,high reservation
    low_default: bool = False        # ... taken from the architecture's default
    form: str = "none"               # "simple", "ranges", "high"
    matched: tuple[int, int] | None = None
    ram_rounded: int = 0
    source: str = ""                 # the crashkernel= word used

    def as_dict(self) -> dict:
        hx = lambda v: None if v is None else f"{v:#x}"  # noqa: E731
        return {"size": self.size, "size_mib": self.size / (1 << 20), "base": hx(self.base), "high": self.high,
                "low": self.low, "low_default": self.low_default, "form": self.form,
                "matched_range": None if self.matched is None else
                [hx(self.matched[0]), None if self.matched[1] == ULLONG_MAX else hx(self.matched[1])],
                "ram_rounded": self.ram_rounded, "source": self.source}


def _word(cmdline: str, at: int) -> str:
    end = cmdline.find(" ", at)
    return cmdline[at - len("crashkernel="):end if end != -1 else len(cmdline)]


def parse(cmdline: str, system_ram: int, arch: str = "x86_64") -> Reservation:
    """Parse ``cmdline`` (a whole command line or just ``crashkernel=...``, or only its value)."""
    if "crashkernel=" not in cmdline:
        cmdline = "crashkernel=" + cmdline
    name = "crashkernel="
    res = Reservation(ram_rounded=roundup(system_ram, SZ_128M))
    at = _last(cmdline, name, None)
    if at is not None:
        colon = cmdline.find(":", at)
        space = cmdline.find(" ", at)
        if colon != -1 and (space == -1 or colon < space):
            res.size, res.base, res.matched = _parse_ranges(cmdline, at, system_ram)
            res.form = "ranges"
        else:
            res.size, res.base = _parse_simple(cmdline, at)
            res.form = "simple"
        res.source = _word(cmdline, at)
    if res.size == 0:
        at = _last(cmdline, name, ",high")
        if at is not None:
            size, cur = memparse(cmdline, at)
            if cur == at:
                raise CrashkernelError("crashkernel: memory value expected")
            res.size, res.base, res.high, res.form, res.source = size, None, True, "high", _word(cmdline, at)
    if res.size and (res.high or res.form != "none"):
        at = _last(cmdline, name, ",low")
        if at is not None:
            low, cur = memparse(cmdline, at)
            if cur == at:
                raise CrashkernelError("crashkernel: memory value expected")
            res.low = low
        elif res.high:
            res.low, res.low_default = DEFAULT_LOW.get(arch, 128 << 20), True
    return res


# --- estimate ---------------------------------------------------------------------------------

ARM64_IMAGE_MAGIC_AT = 56              # struct arm64_image_header (arch/arm64/include/asm/image.h): magic
ARM64_IMAGE_SIZE_AT = 16               # ... and image_size (u64)
ZBOOT_PAYLOAD_AT = 8                   # zboot-header.S: "MZ..", "zimg", payload offset, payload size (u32)


def _arm64_image_head(data: bytes, what: str) -> bytes | None:
    """The first 64 bytes of the arm64 Image in ``data``: raw, compressed whole (a vmlinuz.gz) or in
    an EFI zboot image's payload; None when there is none."""
    if data[ARM64_IMAGE_MAGIC_AT:ARM64_IMAGE_MAGIC_AT + 4] == b"ARM\x64":
        return data[:64]
    if data[:2] == b"MZ" and data[4:8] == b"zimg" and len(data) >= 16:
        offset, size = struct.unpack_from("<II", data, ZBOOT_PAYLOAD_AT)
        data = data[offset:offset + size]
    codec = sniff(data)
    return decompressed_prefix(data, codec, 64, what) if codec else None


def kernel_memory(path: str, arch: str | None = None) -> tuple[int, str]:
    """Bytes the kernel image needs when running, and how that was found; ``arch``, when given, is
    the architecture the image must be for."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read kernel {path}: {e.strerror}") from None
    found: tuple[int, str, str] | None = None
    # x86 boot protocol: "HdrS" at 0x202, init_size (u32) at 0x260 since protocol 2.10
    if len(data) > 0x264 and data[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", data, 0x206)[0] >= 0x20A:
        found = struct.unpack_from("<I", data, 0x260)[0], "bzImage init_size", "x86_64"
    else:
        head = _arm64_image_head(data, f"kernel {path}")
        if head and len(head) >= 64 and head[ARM64_IMAGE_MAGIC_AT:ARM64_IMAGE_MAGIC_AT + 4] == b"ARM\x64":
            found = struct.unpack_from("<Q", head, ARM64_IMAGE_SIZE_AT)[0], "arm64 Image image_size", "arm64"
    if found is None:
        raise BadInputError(f"kernel {path} is not a kernel image kexecfw can size (an x86_64 bzImage with "
                            "boot protocol 2.10+, or an arm64 Image: raw, compressed or EFI zboot); "
                            "pass the capture kernel's vmlinuz")
    size, how, image_arch = found
    if arch is not None and arch != image_arch:
        raise BadInputError(f"kernel {path} is an {image_arch} kernel, not {arch} (--arch {arch})")
    if not 0 < size <= KERNEL_IMAGE_CAP:
        raise BadInputError(f"kernel {path}: its {how} is {size:#x}, not a kernel's size "
                            f"(1 byte to {KERNEL_IMAGE_CAP >> 20} MiB); the header is corrupt")
    return size, how


def initrd_memory(path: str) -> tuple[int, int]:
    """(compressed size, uncompressed size) of an initrd, the unpacked bytes counted, not kept; 0 for an
    uncompressed one (then its size is counted once more below). An initrd that starts with an
    uncompressed cpio (early microcode) and continues compressed is counted as uncompressed."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read initrd {path}: {e.strerror}") from None
    codec = sniff(data)
    return len(data), decompressed_size(data, codec, INITRD_CAP, f"initrd {path}") if codec else 0


RUNTIME = 64 << 20
PER_CPU = 1 << 20
STRUCT_PAGE_FRACTION = 64 / 4096
ALIGN = 16 << 20


def estimate(kernel: str, initrd: str | None, cpus: int = 1, ram: int = 0, arch: str | None = None) -> dict:
    """The reservation the formula in the module docstring gives, with its terms; ``arch``, when
    given, is the architecture the kernel must be for."""
    if not 1 <= cpus <= NR_CPUS_MAX:
        raise BadInputError(f"--cpus must be 1 to {NR_CPUS_MAX} (the kernel's largest NR_CPUS)")
    k, how = kernel_memory(kernel, arch)
    ci, ui = initrd_memory(initrd) if initrd else (0, 0)
    initrd_total = ci + (ui if ui else ci)
    bitmaps = ram // 16384
    subtotal = k + initrd_total + RUNTIME + PER_CPU * cpus + bitmaps
    total = roundup(int(subtotal / (1 - STRUCT_PAGE_FRACTION)), ALIGN)
    return {"kernel": k, "kernel_source": how, "initrd_compressed": ci, "initrd_uncompressed": ui,
            "runtime": RUNTIME, "cpus": cpus, "per_cpu": PER_CPU, "bitmaps": bitmaps, "total": total,
            "crashkernel": f"{total >> 20}M"}
