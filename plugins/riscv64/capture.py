"""riscv64 register layout of NT_PRSTATUS: struct user_regs_struct (arch/riscv/include/uapi/asm/ptrace.h)."""
from __future__ import annotations

from kexecfw import hookimpl

EM_RISCV = 243
# struct user_regs_struct { unsigned long pc, ra, sp, gp, tp, t0-t2, s0-s1, a0-a7, s2-s11, t3-t6; }
# ELF_NGREG = 32 (arch/riscv/include/uapi/asm/elf.h)
USER_REGS_STRUCT = (["pc", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"]
                    + [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + ["t3", "t4", "t5", "t6"])
assert len(USER_REGS_STRUCT) == 32


@hookimpl
def kexecfw_prstatus_registers(machine: int) -> list[str] | None:
    return list(USER_REGS_STRUCT)
