"""riscv64 architecture plugin: Image, DTB /chosen, elfcorehdr; no purgatory (README.md says why).

Registered through the ``kexecfw`` entry point only (not a built-in): the core finds it when
a riscv64 sysroot, ``--arch riscv64`` or an EM_RISCV dump asks for it. The hooks are thin:
image.py probes, placement.py places, vmcore_facts.py derives the kernel's address space,
capture.py and translate.py tell the dump readers the NT_PRSTATUS registers, bounds and
page-table walk; hooks.py holds the hooks. What riscv64 shares with arm64 is the core's: the
DTB and its /chosen (kexecfw.dtboot), the Image header checks and kernel placement
(kexecfw.flatimage), VMCOREINFO of the running kernel (kexecfw.running).
"""

# The hook implementations are in hooks.py, which the core registers (as "riscv64"): the dump readers
# import capture.py from this package, and that must not import the load side (nor pluggy, through
# kexecfw.hookimpl) in a capture kernel. The package's other names are hooks.py's, imported on first use.


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)      # probes of module attributes (__wrapped__ ...) load nothing
    import kexecfw.plugins.riscv64.hooks as hooks
    return getattr(hooks, name)
