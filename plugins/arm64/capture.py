"""arm64 register layout of NT_PRSTATUS (struct user_pt_regs, arch/arm64/include/uapi/asm/ptrace.h)."""
from __future__ import annotations

from kexecfw import hookimpl

EM_AARCH64 = 183
# struct user_pt_regs { __u64 regs[31]; __u64 sp; __u64 pc; __u64 pstate; }
USER_PT_REGS = [f"x{i}" for i in range(31)] + ["sp", "pc", "pstate"]


@hookimpl
def kexecfw_prstatus_registers(machine: int) -> list[str] | None:
    return list(USER_PT_REGS)
