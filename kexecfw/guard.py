"""The host guard's marker: a test session sets ``$KEXECFW_TEST_SESSION``, and then nothing may
change the host (kexecfw.syscalls refuses every real kexec call and reboot; the kdump service
records its system actions instead of running them).

A module of its own, importing nothing, so that every side can ask without loading the others
(the capture boot's ``kdump save`` must not import the load model).
"""
from __future__ import annotations

import os

TEST_SESSION_ENV = "KEXECFW_TEST_SESSION"


def in_test_session() -> bool:
    """Does this process run under a test session (the marker set and not empty)?"""
    return bool(os.environ.get(TEST_SESSION_ENV))
