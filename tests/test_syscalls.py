"""The syscall layer: replaced in tests, real structures and errno explanations."""
from __future__ import annotations

import ctypes
import errno
from pathlib import Path

import pytest

from kexecfw.errors import KexecfwError, PermissionDeniedError
from kexecfw.load import execute_plan
from kexecfw.model import LoadContext, LoadOptions
from kexecfw.pluginmanager import Hooks
from kexecfw.segments.plan import Plan, Segment
from kexecfw.syscalls import KexecSegment, RecordingLayer, explain_errno, lockdown_mode, use_layer
from kexecfw.sysroot import Sysroot


def test_kexec_segment_matches_the_uapi_struct():
    assert ctypes.sizeof(KexecSegment) == 4 * ctypes.sizeof(ctypes.c_void_p)


def ctx_for(root: str) -> LoadContext:
    hooks = Hooks()
    return LoadContext(arch=hooks.arch("arm64"), sysroot=Sysroot(root), options=LoadOptions(kernel=Path("k")),
                       hooks=hooks)


def test_execute_plan_goes_to_the_installed_layer_only():
    plan = Plan("arm64", "panic", "kexec_load", 0x80000000, 183 << 16 | 1, "", None,
                [Segment("kernel", b"abc", 0x80000000, 0x1000)])
    with use_layer(RecordingLayer()) as layer:
        execute_plan(plan, ctx_for("/"))
    assert [c[0] for c in layer.calls] == ["kexec_load"]
    assert layer.calls[0][1]["flags"] == 183 << 16 | 1


def test_execute_plan_refuses_a_snapshot(tmp_path):
    plan = Plan("arm64", "normal", "kexec_load", 0, 0, "", None, [])
    with use_layer(RecordingLayer()) as layer, pytest.raises(KexecfwError, match="snapshot"):
        execute_plan(plan, ctx_for(str(tmp_path)))
    assert layer.calls == []


def test_errno_messages_say_what_to_do(tmp_path):
    root = tmp_path
    (root / "sys/kernel/security").mkdir(parents=True)
    (root / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    sysroot = Sysroot(root)
    assert lockdown_mode(sysroot) == "integrity"
    e = explain_errno(errno.EPERM, "kexec_load", sysroot)
    assert isinstance(e, PermissionDeniedError) and "--file-load" in e.message and "locked down" in e.message
    assert "--classic" in explain_errno(errno.ENOSYS, "kexec_file_load", sysroot).message
    assert "crashkernel=" in explain_errno(errno.ENOMEM, "kexec_load", sysroot, panic=True).message
    assert "KEXEC_SIG" in explain_errno(errno.EKEYREJECTED, "kexec_file_load", sysroot).message
    for err in (errno.EBUSY, errno.EINVAL, errno.EADDRNOTAVAIL, errno.E2BIG):
        assert "\n" not in explain_errno(err, "kexec_load", sysroot).message


def test_file_load_support_from_the_config_else_kallsyms(tmp_path: Path) -> None:
    from kexecfw.plugins.x86_64.hooks import ARCH as X86_64
    from kexecfw.syscalls import kernel_has_file_load
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-test\n")
    sysroot = Sysroot(tmp_path)
    assert kernel_has_file_load(sysroot, X86_64) is None              # nothing tells
    (tmp_path / "proc/kallsyms").write_text("ffffffff81000000 T _text\nffffffff81200000 T kimage_file_post_load_cleanup_x\n")
    assert kernel_has_file_load(sysroot, X86_64) is None              # a longer name is another symbol
    with open(tmp_path / "proc/kallsyms", "a") as f:
        f.write("ffffffff81234560 T kimage_file_post_load_cleanup\n")
    assert kernel_has_file_load(sysroot, X86_64) is True
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/config-6.1.0-test").write_text("CONFIG_KEXEC=y\n# CONFIG_KEXEC_FILE is not set\n")
    assert kernel_has_file_load(sysroot, X86_64) is False             # the config answers first
