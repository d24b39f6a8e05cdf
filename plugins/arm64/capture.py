"""What the dump readers know of arm64 (kexecfw.machines): found without the plugin's hooks or pluggy.

NT_PRSTATUS: struct user_pt_regs (arch/arm64/include/uapi/asm/ptrace.h).
"""
from __future__ import annotations

from kexecfw.machines import MachineCapture, RegisterLayout
from kexecfw.vmcore.bounds import ArchBounds

EM_AARCH64 = 183
# arch/arm64/Kconfig ARM64_VA_BITS: 36 (16K pages, 2 levels) to 52 bits of kernel virtual address; here,
# not in translate.py, for a load's vmcore_facts (translate imports the dump readers)
ARM64_MIN_VA_BITS, ARM64_MAX_VA_BITS = 36, 52
# struct user_pt_regs { __u64 regs[31]; __u64 sp; __u64 pc; __u64 pstate; }; x30 is the link register
USER_PT_REGS = RegisterLayout([f"x{i}" for i in range(31)] + ["sp", "pc", "pstate"], pc="pc", sp="sp", lr="x30")


def _translator(info):
    from kexecfw.plugins.arm64.translate import Arm64Translator
    return Arm64Translator(info)


CAPTURE = MachineCapture(
    EM_AARCH64, ("aarch64", "arm64"),
    # arch/arm64/include/asm/sparsemem.h: MAX_PHYSMEM_BITS 52 (LPA/LPA2)
    ArchBounds("arm64", (4096, 16384, 65536), 52),
    USER_PT_REGS, _translator)
