"""The host-safety guard: while tests run, no kexec_load, kexec_file_load or reboot reaches the host kernel,
whatever the sysroot (kexecfw/syscalls.py, raw_syscall).

Safe even if the guard were broken: libc's syscall() below the guard is replaced by a recorder first, in
this process and in the CLI child, so a broken guard would call the recorder, never the kernel.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw import syscalls
from kexecfw.errors import KexecfwError
from kexecfw.load import execute_plan
from kexecfw.model import KEXEC_ON_CRASH, ArchSpec, LoadContext, LoadOptions
from kexecfw.pluginmanager import Hooks
from kexecfw.segments.plan import Plan, Segment
from kexecfw.syscalls import TEST_SESSION_ENV, LinuxSyscalls, current_layer
from kexecfw.sysroot import Sysroot
from tests.conftest import fixture_kernel

REFUSED = r"^refusing (kexec_load|kexec_file_load|reboot): this is a test session \(\$KEXECFW_TEST_SESSION is set\)"


class SyscallRecorder:
    """Stands in for libc's syscall(): records its arguments, and succeeds."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, *args: object) -> int:
        self.calls.append(args)
        return 0


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> SyscallRecorder:
    rec = SyscallRecorder()
    monkeypatch.setattr(syscalls, "libc_syscall", lambda: rec)
    assert syscalls.libc_syscall() is rec
    return rec


def host_arch() -> ArchSpec:
    return Hooks().arch(os.uname().machine)


def every_real_call(layer: LinuxSyscalls, kernel_fd: int) -> dict[str, object]:
    arch = layer.arch
    segment = Segment("kernel", b"\x90" * 16, 0x1000000, 0x1000)
    return {
        "kexec_load": lambda: layer.kexec_load(0x1000000, [segment], arch.kexec_arch),
        "kexec_load panic": lambda: layer.kexec_load(0x1000000, [segment], arch.kexec_arch | KEXEC_ON_CRASH),
        "kexec_file_load": lambda: layer.kexec_file_load(kernel_fd, -1, "console=ttyS0", panic=False),
        "unload": lambda: layer.unload(panic=True, file_load=False),
        "unload file_load": lambda: layer.unload(panic=False, file_load=True),
        "reboot_kexec": lambda: layer.reboot_kexec(),
    }


def test_the_test_session_is_marked():
    assert os.environ[TEST_SESSION_ENV] == "1"      # tests/conftest.py, inherited by every child process


def test_every_real_syscall_is_refused_on_the_live_system(recorder, tmp_path):
    layer = current_layer(host_arch())
    assert type(layer) is LinuxSyscalls and layer.sysroot.is_live   # the real layer, on `/`
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"MZ")
    fd = os.open(kernel, os.O_RDONLY)
    try:
        for what, call in every_real_call(layer, fd).items():
            with pytest.raises(KexecfwError, match=REFUSED) as e:
                call()
            assert "\n" not in e.value.message, what
    finally:
        os.close(fd)
    assert recorder.calls == []


def test_a_load_on_the_live_root_is_refused_below_the_sysroot_check(recorder, tmp_path):
    arch = host_arch()
    ctx = LoadContext(arch=arch, sysroot=Sysroot("/"), options=LoadOptions(kernel=tmp_path / "k"), hooks=Hooks())
    assert ctx.sysroot.is_live                           # the sysroot check lets it pass
    plan = Plan(arch.name, "normal", "kexec_load", 0x1000000, arch.kexec_arch, "", None,
                [Segment("kernel", b"abc", 0x1000000, 0x1000)])
    with pytest.raises(KexecfwError, match=REFUSED):
        execute_plan(plan, ctx)
    assert recorder.calls == []


def test_without_the_marker_the_call_reaches_the_recorder_not_the_kernel(recorder, monkeypatch):
    """The recorder sits where the kernel would be: what the refusals above kept from it."""
    monkeypatch.delenv(TEST_SESSION_ENV)
    arch = host_arch()
    LinuxSyscalls(arch).unload(panic=True, file_load=False)
    assert len(recorder.calls) == 1
    assert recorder.calls[0][0].value == arch.nr_kexec_load


def test_another_architectures_syscall_numbers_are_refused(recorder, monkeypatch):
    monkeypatch.delenv(TEST_SESSION_ENV)
    hooks = Hooks()
    other = next(s for s in hooks.architectures() if not s.matches(os.uname().machine))
    with pytest.raises(KexecfwError, match=rf"^refusing kexec_load: the syscall numbers are {other.name}'s "
                                           rf"but this machine is {os.uname().machine}"):
        LinuxSyscalls(other).unload(panic=True, file_load=False)
    assert recorder.calls == []


# The child replaces libc's syscall() by a recorder (appending to the file argv[1]) before it imports the
# CLI, so even without the guard nothing could reach the kernel; the guard must refuse before the recorder.
CHILD = """
import sys
import kexecfw.syscalls

def recorder(*args):
    with open(sys.argv[1], "a") as f:
        f.write(repr(args) + "\\n")
    return 0

kexecfw.syscalls.libc_syscall = lambda: recorder
from kexecfw.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("argv", [["load", "{kernel}", "--append", "console=ttyS0"],
                                  ["load", "--classic", "{kernel}", "--append", "console=ttyS0"],
                                  ["unload", "-p"]], ids=["file-load", "classic", "unload"])
def test_the_cli_refuses_a_real_load_of_a_real_kernel(argv, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a real load is tried only as root (as non-root the CLI refuses before the guard)")
    arch = host_arch().name
    kernel: Path = fixture_kernel(arch) if "{kernel}" in argv else Path()
    record = tmp_path / "syscalls"
    env = {**os.environ, TEST_SESSION_ENV: "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(record), "--sysroot", "/",
                           *(a.format(kernel=kernel) for a in argv)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("kexecfw: error: refusing ") and "this is a test session" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert not record.exists()
