"""x86_64 architecture plugin: bzImage, boot_params, e820, purgatory and kexec_file_load."""
from __future__ import annotations

from kexecfw import hookimpl
from kexecfw.model import ArchSpec
from kexecfw.plugins.x86_64.capture import kexecfw_prstatus_registers  # noqa: F401  (hook implementation)

EM_X86_64 = 62

ARCH = ArchSpec(
    name="x86_64",
    aliases=("amd64", "x86-64", "x64"),
    elf_machine=EM_X86_64,
    page_size=4096,
    # arch/x86/entry/syscalls/syscall_64.tbl
    nr_kexec_load=246,
    nr_kexec_file_load=320,
    nr_reboot=169,
    uname_machines=("x86_64",),
)


@hookimpl
def kexecfw_architectures() -> list[ArchSpec]:
    return [ARCH]
