"""The QEMU lab: real Debian kernels loaded, crashed and captured with kexecfw, on any Debian host.

    from kexecfw.lab import run
    result = run(arch="arm64", scenario="panic", loader="kexecfw")
    print(result.summary())

See docs/lab.md. Attributes are imported on first use so that a submodule
(the cpio writer, the result reader) does not pull in the whole lab.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kexecfw.lab.errors import LabError
    from kexecfw.lab.result import LabResult
    from kexecfw.lab.runner import run

__all__ = ["run", "LabResult", "LabError"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from kexecfw.lab.runner import run
        return run
    if name == "LabResult":
        from kexecfw.lab.result import LabResult
        return LabResult
    if name == "LabError":
        from kexecfw.lab.errors import LabError
        return LabError
    raise AttributeError(f"module 'kexecfw.lab' has no attribute {name!r}")
