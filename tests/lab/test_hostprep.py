"""Host preparation for full-OS images of another architecture: mmdebstrap runs the guest's maintainer scripts
in a chroot, which needs arch-test and qemu-user registered with binfmt_misc."""
from __future__ import annotations

from kexecfw.lab.hostprep import BINFMT_CONF, TOOLS, binfmt_name, tools_for
from kexecfw.lab.targets import HOST_ARCH, arch_target, needs_emulation
from tests.conftest import oracle


def test_a_foreign_full_os_image_needs_arch_test_and_qemu_user() -> None:
    for name in ("arm64", "x86_64", "riscv64"):
        target = arch_target(name)
        foreign = needs_emulation(target)
        tools = tools_for(target, full_os=True)
        assert ("arch-test" in tools) == foreign and (target.qemu_user in tools) == foreign
        assert "arch-test" not in tools_for(target)          # lab initramfs guests need no chroot
        assert all(tool in TOOLS for tool in tools)           # each maps to the package that installs it


def test_the_binfmt_entry_is_qemu_user_static_registration() -> None:
    oracle("qemu-aarch64-static", "qemu-user-static")
    target = arch_target("riscv64" if HOST_ARCH == "arm64" else "arm64")
    name = binfmt_name(target)
    assert name == target.qemu_user.removesuffix("-static")
    conf = (BINFMT_CONF / f"{name}.conf").read_text()
    assert conf.startswith(f":{name}:M::")                    # the line ensure_binfmt writes to register
