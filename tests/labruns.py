"""The lab runs the slow tests assert on, and how they check a run's phases.

Every test module that wants "the panic run of this architecture" asks :func:`shared_lab_run`: the
options are spelled once here, so kexecfw.lab.shared.run_once boots it once per session for all of
them (any option that differed would silently cost another boot of a minute or more under TCG).
"""
from __future__ import annotations

import os

from kexecfw.lab.result import LabResult
from kexecfw.lab.targets import GENERATIONS

GENERATION_ENV = "KEXECFW_LAB_GENERATION"
# The exec scenario's phases: a normal load, kexec into the second kernel, the marker on its console.
EXEC_PHASES = ("load (", "exec -> second kernel", "marker on the second kernel's console")


def default_generation() -> str:
    """The kernel generation of the shared runs: $KEXECFW_LAB_GENERATION, else Debian 12's 6.1."""
    return os.environ.get(GENERATION_ENV) or "6.1"


def lab_generations() -> list[str]:
    """The generations a test of every generation boots: the one $KEXECFW_LAB_GENERATION names, else all."""
    named = os.environ.get(GENERATION_ENV)
    return [named] if named else list(GENERATIONS)


def shared_lab_run(arch: str, scenario: str = "panic", generation: str | None = None,
                   loader: str = "kexecfw") -> LabResult:
    """This session's run of ``arch`` (booted on first use), with kexec-tools' ``kexec -p -d``
    recorded beside a kexecfw panic load; the generation defaults to :func:`default_generation`."""
    from kexecfw.lab.shared import run_once
    result = run_once(arch, scenario, loader, compare_kexec_tools=(scenario == "panic" and loader == "kexecfw"),
                      kernel_generation=generation or default_generation(), timeout=900)
    print(result.summary())
    return result


def require_phases(result: LabResult, *name_prefixes: str) -> None:
    """Each phase whose name starts with one of ``name_prefixes`` is there and passed, else the test
    fails with that phase's detail and the run's notes."""
    for prefix in name_prefixes:
        phase = next((p for p in result.phases if p.name.startswith(prefix)), None)
        assert phase is not None, f"no phase {prefix!r} in {result.directory}/result.json"
        assert phase.ok, (f"{result.arch}: phase {phase.name!r} failed: {phase.detail or result.failure}\n"
                          + "\n".join(result.notes))
