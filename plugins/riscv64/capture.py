"""What the dump readers know of riscv64 (kexecfw.machines): found without the plugin's hooks or pluggy.

NT_PRSTATUS: struct user_regs_struct (arch/riscv/include/uapi/asm/ptrace.h); ra is the link register.
"""
from __future__ import annotations

from kexecfw.machines import MachineCapture, RegisterLayout
from kexecfw.vmcore.bounds import ArchBounds

EM_RISCV = 243
# struct user_regs_struct { unsigned long pc, ra, sp, gp, tp, t0-t2, s0-s1, a0-a7, s2-s11, t3-t6; }
# ELF_NGREG = 32 (arch/riscv/include/uapi/asm/elf.h)
USER_REGS_STRUCT = RegisterLayout(["pc", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"]
                                  + [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)]
                                  + ["t3", "t4", "t5", "t6"], pc="pc", sp="sp", lr="ra")
assert len(USER_REGS_STRUCT) == 32


def _translator(info):
    from kexecfw.plugins.riscv64.translate import Riscv64Translator
    return Riscv64Translator(info)


CAPTURE = MachineCapture(
    EM_RISCV, ("riscv64",),
    # arch/riscv/include/asm/sparsemem.h: MAX_PHYSMEM_BITS 56 (Sv57)
    ArchBounds("riscv64", (4096,), 56),
    USER_REGS_STRUCT, _translator)
