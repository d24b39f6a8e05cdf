"""x86_64 register layout of NT_PRSTATUS (struct user_regs_struct, arch/x86/include/asm/user_64.h)."""
from __future__ import annotations

from kexecfw import hookimpl

EM_X86_64 = 62
USER_REGS_STRUCT = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
]


@hookimpl
def kexecfw_prstatus_registers(machine: int) -> list[str] | None:
    return list(USER_REGS_STRUCT)
