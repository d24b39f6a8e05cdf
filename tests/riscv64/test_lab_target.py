"""The riscv64 lab target: Debian 13 only, kexec-tools from sid (trixie builds none for riscv64),
kexec_load for it (the kernel has no kexec_file_load)."""
from __future__ import annotations

import pytest

from kexecfw.errors import KexecfwError
from kexecfw.lab.targets import arch_target, generation, guest_packages, has_kexec_tools, target_generation


def test_riscv64_is_debian_13_only_and_says_so_in_one_line() -> None:
    riscv64 = arch_target("riscv64")
    assert target_generation(riscv64).name == "6.12"
    with pytest.raises(KexecfwError) as refused:
        target_generation(riscv64, "6.1")
    assert refused.value.message == ("Debian has no 6.1 kernel for riscv64 (suite bookworm): "
                                     "use --kernel-generation 6.12")
    assert target_generation(arch_target("arm64")).name == "6.1"      # the others keep Debian 12 first


def test_riscv64_kexec_tools_come_from_sid_and_use_kexec_load() -> None:
    riscv64, arm64 = arch_target("riscv64"), arch_target("arm64")
    assert has_kexec_tools(riscv64) and not riscv64.kexec_tools and riscv64.kexec_tools_suite == "sid"
    assert "kexec-tools" not in guest_packages(generation("6.12"), riscv64)   # not in trixie's apt root
    assert not riscv64.kexec_file_load and arm64.kexec_file_load
