"""kexecfw: load Linux kernels with kexec and capture crash dumps, architectures as plugins.

Plugin authors need only :data:`hookimpl` and the models named in :mod:`kexecfw.hookspecs`.
"""
from __future__ import annotations


__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> object:
    # pluggy is imported on first use of kexecfw.hookimpl, not by every `python -m kexecfw`:
    # `vmcore dmesg` in a capture kernel has no plugins to load and counts its start-up time.
    if name == "hookimpl":
        import pluggy
        global hookimpl
        hookimpl = pluggy.HookimplMarker("kexecfw")  # Marks a function as a ``kexecfw_*`` hook implementation.
        return hookimpl
    raise AttributeError(f"module 'kexecfw' has no attribute {name!r}")
