"""kexecfw: load Linux kernels with kexec and capture crash dumps, architectures as plugins.

Plugin authors need only :data:`hookimpl` and the models named in :mod:`kexecfw.hookspecs`.
"""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marks a function of a plugin as an implementation of a ``kexecfw_*`` hook.
hookimpl = pluggy.HookimplMarker("kexecfw")

__all__ = ["__version__", "hookimpl"]
