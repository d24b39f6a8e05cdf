"""kexec_load, kexec_file_load and reboot(LINUX_REBOOT_CMD_KEXEC) through ctypes.

The rest of kexecfw talks to a :class:`SyscallLayer`; :func:`current_layer`
returns the real one unless a test installed another with
:func:`use_layer`. Errors become one-line messages that say what to do
(errno meanings from kernel/kexec.c, kernel/kexec_file.c, security/lockdown).

Every real kexec_load, kexec_file_load and reboot passes :func:`raw_syscall`, which refuses
while ``$KEXECFW_TEST_SESSION`` is set (non-empty): tests/conftest.py sets it at import, so the
test process and every process it starts (``python -m kexecfw ...``) can never reach the host
kernel, whatever the sysroot. It also refuses an architecture that is not the machine's (its
syscall numbers would mean other calls). The lab's QEMU guests are separate machines: their
/init starts with the guest kernel's environment, not the host's, so their loads are real.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Callable, Iterator, Protocol

from kexecfw.errors import KexecfwError, PermissionDeniedError
from kexecfw.guard import TEST_SESSION_ENV, in_test_session
from kexecfw.model import KEXEC_FILE_NO_INITRAMFS, KEXEC_FILE_ON_CRASH, KEXEC_FILE_UNLOAD, KEXEC_ON_CRASH, ArchSpec
from kexecfw.segments.plan import Segment
from kexecfw.sysroot import Sysroot

# include/uapi/linux/reboot.h
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543



class KexecSegment(ctypes.Structure):
    """struct kexec_segment, include/uapi/linux/kexec.h"""

    _fields_ = [("buf", ctypes.c_void_p), ("bufsz", ctypes.c_size_t),
                ("mem", ctypes.c_void_p), ("memsz", ctypes.c_size_t)]


class SyscallLayer(Protocol):
    def kexec_load(self, entry: int, segments: list[Segment], flags: int) -> None: ...
    def kexec_file_load(self, kernel_fd: int, initrd_fd: int, cmdline: str, *, panic: bool) -> None: ...
    def unload(self, *, panic: bool, file_load: bool) -> None: ...
    def reboot_kexec(self) -> None: ...


def lockdown_mode(sysroot: Sysroot) -> str | None:
    """"integrity" or "confidentiality" when the kernel is locked down, else None."""
    text = sysroot.read_optional("sys/kernel/security/lockdown")
    if text and "[" in text:
        mode = text.split("[", 1)[1].split("]", 1)[0]
        return None if mode == "none" else mode
    return None


def kernel_has_file_load(sysroot: Sysroot, arch: ArchSpec) -> bool | None:
    """Whether the running kernel has kexec_file_load: from its config, else kallsyms (True when it lists
    kimage_file_post_load_cleanup, kernel/kexec_file.c); None if unknown."""
    if arch.nr_kexec_file_load < 0:
        return False
    from kexecfw.snapshot import snapshot_metadata
    recorded = snapshot_metadata(sysroot).get("kernel_has_kexec_file_load")
    if recorded is not None:
        return bool(recorded)
    release = (sysroot.read_optional("proc/sys/kernel/osrelease") or "").strip()
    for config in (f"boot/config-{release}", "proc/config"):
        text = sysroot.read_optional(config) if release or config == "proc/config" else None
        if text:
            return "CONFIG_KEXEC_FILE=y" in text
    from kexecfw.running import kallsyms_symbol
    # not False when absent: a snapshot keeps only the symbols kexecfw reads, and a user's kallsyms
    # shows every address as 0 (kallsyms_symbol's None)
    return True if kallsyms_symbol(sysroot, "kimage_file_post_load_cleanup") is not None else None


def explain_errno(err: int, call: str, sysroot: Sysroot, *, panic: bool = False) -> KexecfwError:
    """A one-line, actionable error for a failed kexec syscall."""
    what = f"{call} failed"
    if err == errno.EPERM:
        if os.geteuid() != 0:
            return PermissionDeniedError(f"{what}: not permitted; run as root (CAP_SYS_BOOT)")
        if (sysroot.read_optional("proc/sys/kernel/kexec_load_disabled") or "0").strip() == "1":
            return PermissionDeniedError(f"{what}: kexec is disabled (kernel.kexec_load_disabled=1) until reboot")
        mode = lockdown_mode(sysroot)
        if mode and call == "kexec_load":
            return PermissionDeniedError(f"{what}: the kernel is locked down ({mode}) and blocks kexec_load; "
                                         "use --file-load with a signed kernel")
        return PermissionDeniedError(f"{what}: not permitted (a security module may forbid kexec)")
    messages = {
        errno.EBUSY: "another kexec operation is in progress, or the loaded image is in use; retry",
        errno.ENOEXEC: "the kernel does not recognise this image format for kexec_file_load; try --classic",
        errno.EKEYREJECTED: "the kernel requires a signed image and rejected this one's signature (KEXEC_SIG)",
        errno.EBADMSG: "the kernel could not verify the image's signature (KEXEC_SIG); use a signed kernel",
        errno.ENOSYS: f"this kernel has no {call}; "
                      + ("use --classic" if call == "kexec_file_load" else "it was built without CONFIG_KEXEC"),
        errno.ENOMEM: "the kernel could not allocate memory for the segments"
                      + ("; reserve a larger crashkernel=" if panic else ""),
        errno.EADDRNOTAVAIL: "a segment or the entry lies outside the memory the kernel allows "
                             "(crash region or page alignment)",
        errno.EINVAL: "the kernel rejected the arguments (segments, flags or command line)",
        errno.EACCES: "access denied (IMA appraisal or a security module refused the image)",
        errno.EMSGSIZE: "the command line is too long for this kernel",
        errno.ENOENT: "nothing is loaded to act on",
    }
    return KexecfwError(f"{what}: {messages.get(err, os.strerror(err))} [{errno.errorcode.get(err, err)}]")


def libc_syscall() -> Callable[..., int]:
    """libc's syscall(2) through ctypes: the one function that reaches the kernel."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall


def raw_syscall(name: str, nr: int, arch: ArchSpec, *args: object) -> int:
    """Make syscall ``nr`` (``name``) of ``arch``, unless this is a test session or another machine."""
    if in_test_session():
        raise KexecfwError(f"refusing {name}: this is a test session (${TEST_SESSION_ENV} is set), "
                           "nothing may reach the host kernel")
    machine = os.uname().machine
    if not arch.matches(machine):
        raise KexecfwError(f"refusing {name}: the syscall numbers are {arch.name}'s but this machine is "
                           f"{machine}; plan with --dry-run instead")
    if nr < 0:
        raise KexecfwError(f"{arch.name} has no {name} syscall")
    return libc_syscall()(ctypes.c_long(nr), *args)


class _PyBuffer(ctypes.Structure):
    """Py_buffer (Include/pybuffer.h): what PyObject_GetBuffer fills."""
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def buffer_address(buf: bytes | memoryview) -> int:
    """The address of ``buf``'s bytes (bytes, a view, a mapping), without copying them: a segment's
    buffer is the kernel file's bytes or a view of them (kexecfw.load.read_input). Valid while ``buf``
    lives; a contiguous buffer is required (PyBUF_SIMPLE), which every segment's is."""
    view = _PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(buf), ctypes.byref(view), 0)   # raises if not
    try:
        return view.buf or 0
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


class LinuxSyscalls:
    """The real syscalls of the running kernel, for architecture ``arch``."""

    def __init__(self, arch: ArchSpec, sysroot: Sysroot | None = None) -> None:
        self.arch = arch
        self.sysroot = sysroot or Sysroot("/")

    def _call(self, name: str, nr: int, *args: object, panic: bool = False) -> None:
        if raw_syscall(name, nr, self.arch, *args) != 0:
            raise explain_errno(ctypes.get_errno(), name, self.sysroot, panic=panic)

    def kexec_load(self, entry: int, segments: list[Segment], flags: int) -> None:
        # Pointers into the segments' own buffers (alive as long as the segments): the kernel only reads
        # them, and copying each (create_string_buffer) moved the 30+ MiB of a load once more.
        array = (KexecSegment * max(len(segments), 1))()
        for i, s in enumerate(segments):
            array[i] = KexecSegment(ctypes.c_void_p(buffer_address(s.buf)), s.bufsz, s.mem, s.memsz)
        self._call("kexec_load", self.arch.nr_kexec_load, ctypes.c_ulong(entry), ctypes.c_ulong(len(segments)),
                   array if segments else None, ctypes.c_ulong(flags), panic=bool(flags & KEXEC_ON_CRASH))

    def kexec_file_load(self, kernel_fd: int, initrd_fd: int, cmdline: str, *, panic: bool) -> None:
        flags = (KEXEC_FILE_ON_CRASH if panic else 0) | (KEXEC_FILE_NO_INITRAMFS if initrd_fd < 0 else 0)
        raw = cmdline.encode() + b"\0"
        self._call("kexec_file_load", self.arch.nr_kexec_file_load, ctypes.c_int(kernel_fd),
                   ctypes.c_int(initrd_fd), ctypes.c_ulong(len(raw)), ctypes.c_char_p(raw),
                   ctypes.c_ulong(flags), panic=panic)

    def unload(self, *, panic: bool, file_load: bool) -> None:
        if file_load:
            flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if panic else 0)
            self._call("kexec_file_load", self.arch.nr_kexec_file_load, ctypes.c_int(-1), ctypes.c_int(-1),
                       ctypes.c_ulong(0), None, ctypes.c_ulong(flags))
        else:
            flags = self.arch.kexec_arch | (KEXEC_ON_CRASH if panic else 0)
            self._call("kexec_load", self.arch.nr_kexec_load, ctypes.c_ulong(0), ctypes.c_ulong(0), None,
                       ctypes.c_ulong(flags))

    def reboot_kexec(self) -> None:
        self._call("reboot", self.arch.nr_reboot, ctypes.c_uint(LINUX_REBOOT_MAGIC1),
                   ctypes.c_uint(LINUX_REBOOT_MAGIC2), ctypes.c_uint(LINUX_REBOOT_CMD_KEXEC), None)


_override: SyscallLayer | None = None


def current_layer(arch: ArchSpec) -> SyscallLayer:
    return _override if _override is not None else LinuxSyscalls(arch)


@contextlib.contextmanager
def use_layer(layer: SyscallLayer) -> Iterator[SyscallLayer]:
    """Route every kexec syscall to ``layer`` (tests: nothing reaches the host kernel)."""
    global _override
    previous, _override = _override, layer
    try:
        yield layer
    finally:
        _override = previous


class RecordingLayer:
    """A syscall layer that records calls instead of making them (tests, --dry-run demos)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def kexec_load(self, entry: int, segments: list[Segment], flags: int) -> None:
        self.calls.append(("kexec_load", {"entry": entry, "segments": list(segments), "flags": flags}))

    def kexec_file_load(self, kernel_fd: int, initrd_fd: int, cmdline: str, *, panic: bool) -> None:
        self.calls.append(("kexec_file_load", {"kernel_fd": kernel_fd, "initrd_fd": initrd_fd,
                                               "cmdline": cmdline, "panic": panic}))

    def unload(self, *, panic: bool, file_load: bool) -> None:
        self.calls.append(("unload", {"panic": panic, "file_load": file_load}))

    def reboot_kexec(self) -> None:
        self.calls.append(("reboot_kexec", {}))
