"""x86_64 architecture plugin: bzImage, boot_params, e820, purgatory and kexec_file_load.

The hooks are in hooks.py (each delegates to a module that does one thing), the dump readers'
facts in capture.py (register layout, bounds) and translate.py (page-table walk).
"""

# The hook implementations are in hooks.py, which the core registers (as "x86_64"): the dump readers
# import capture.py from this package, and that must not import the load side (nor pluggy, through
# kexecfw.hookimpl) in a capture kernel. The package's other names are hooks.py's, imported on first use.


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)      # probes of module attributes (__wrapped__ ...) load nothing
    import kexecfw.plugins.x86_64.hooks as hooks
    return getattr(hooks, name)
