"""What the dump readers know of x86_64 (kexecfw.machines): found without the plugin's hooks or pluggy.

NT_PRSTATUS: struct user_regs_struct (arch/x86/include/asm/user_64.h); the return address is on the stack.
"""
from __future__ import annotations

from kexecfw.machines import MachineCapture, RegisterLayout
from kexecfw.vmcore.bounds import ArchBounds

EM_X86_64 = 62
USER_REGS_STRUCT = RegisterLayout([
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
], pc="rip", sp="rsp")


def _translator(info):
    from kexecfw.plugins.x86_64.translate import X86_64Translator
    return X86_64Translator(info)


CAPTURE = MachineCapture(
    EM_X86_64, ("x86_64",),
    # arch/x86/include/asm/sparsemem.h: MAX_PHYSMEM_BITS 52 with 5-level paging (46 with 4)
    ArchBounds("x86_64", (4096,), 52),
    USER_REGS_STRUCT, _translator,
    True)                               # kallsyms_absolute_percpu
