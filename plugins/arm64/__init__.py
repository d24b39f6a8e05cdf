"""arm64 (AArch64) architecture plugin: Image, DTB /chosen, elfcorehdr and purgatory.

The hooks here are thin: each delegates to a module that does one thing
(hooks.py holds them; image.py probes, placement.py places, vmcore_facts.py derives the kernel's
address space, relocations.py links the purgatory, purgatory/ holds its source
and the prebuilt object; capture.py and translate.py are the dump readers'
register layout, bounds and page-table walk). What arm64 shares with other device-tree
architectures is the core's: the DTB and its /chosen (kexecfw.dtboot), the
Image header checks and kernel placement (kexecfw.flatimage), VMCOREINFO and
kallsyms of the running kernel (kexecfw.running).
"""

# The hook implementations are in hooks.py, which the core registers (as "arm64"): the dump readers
# import capture.py from this package, and that must not import the load side (nor pluggy, through
# kexecfw.hookimpl) in a capture kernel. The package's other names are hooks.py's, imported on first use.


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)      # probes of module attributes (__wrapped__ ...) load nothing
    import kexecfw.plugins.arm64.hooks as hooks
    return getattr(hooks, name)
