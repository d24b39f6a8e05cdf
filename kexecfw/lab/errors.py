"""The lab's one error type: a failure to prepare, boot or read back a guest."""
from __future__ import annotations

from kexecfw.errors import KexecfwError


class LabError(KexecfwError):
    """Host preparation, guest build or guest run failed; the message says what and what to do."""
