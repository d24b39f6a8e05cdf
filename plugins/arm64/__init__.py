"""arm64 (AArch64) architecture plugin: Image, DTB /chosen, elfcorehdr and purgatory."""
from __future__ import annotations

from kexecfw import hookimpl
from kexecfw.model import ArchSpec
from kexecfw.plugins.arm64.capture import kexecfw_prstatus_registers  # noqa: F401  (hook implementation)

EM_AARCH64 = 183

ARCH = ArchSpec(
    name="arm64",
    aliases=("aarch64",),
    elf_machine=EM_AARCH64,
    page_size=4096,
    # include/uapi/asm-generic/unistd.h
    nr_kexec_load=104,
    nr_kexec_file_load=294,
    nr_reboot=142,
    uname_machines=("aarch64", "arm64"),
)


@hookimpl
def kexecfw_architectures() -> list[ArchSpec]:
    return [ARCH]
