"""In a real x86_64 guest booted through EFI (QEMU with OVMF): a classic panic load, a classic exec.

The capture kernel gets no EFI state from us; it must still find ACPI (through acpi_rsdp_addr,
which an EFI boot leaves 0 in the running kernel's boot_params: we take it from the EFI systab).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.labruns import EXEC_PHASES, require_phases

pytestmark = pytest.mark.slow
OVMF = Path("/usr/share/ovmf/OVMF.fd")


@pytest.fixture(scope="module")
def efi_lab(tmp_path_factory: pytest.TempPathFactory):
    if not OVMF.is_file():
        pytest.skip("no OVMF firmware (Debian package ovmf; setup.sh installs it)")
    import kexecfw.lab.runner as runner
    plain = runner.qemu_command
    runs = {}

    def with_efi_firmware(*args, **kwargs) -> list[str]:
        return plain(*args, **kwargs) + ["-bios", str(OVMF)]

    def get(scenario: str):
        if scenario not in runs:
            keep = tmp_path_factory.mktemp(f"lab-x86_64-efi-{scenario}") / "results"
            runner.qemu_command = with_efi_firmware
            try:
                runs[scenario] = runner.run("x86_64", scenario, "kexecfw", keep=keep, timeout=1200,
                                            load_args="--classic")
            finally:
                runner.qemu_command = plain
            print(runs[scenario].summary())
        return runs[scenario]
    return get


def test_capture_kernel_of_an_efi_guest_finds_acpi(efi_lab) -> None:
    result = efi_lab("panic")
    console = result.path("console.log").read_text(errors="replace")
    first, _, capture = console.partition("lab.role=capture")
    assert "efi: EFI v" in first, "the first kernel did not boot through EFI"
    assert capture, "the capture kernel did not boot"
    rsdp = re.search(r"ACPI: RSDP (0x[0-9A-F]+)", first)
    assert rsdp is not None
    assert f"ACPI: RSDP {rsdp.group(1)}" in capture
    assert "efi: EFI v" in capture, "the capture kernel did not get the EFI state"
    assert "A valid RSDP was not found" not in capture
    assert (result.vmcore_size() or 0) > 0


def test_classic_exec_on_an_efi_guest(efi_lab) -> None:
    result = efi_lab("exec")
    require_phases(result, *EXEC_PHASES)
    console = result.path("console.log").read_text(errors="replace")
    second = console.partition("lab.role=second")[2]
    assert "ACPI: RSDP" in second and "A valid RSDP was not found" not in second
    assert "efi: EFI v" in second and "Registered efivars operations" in second   # runtime services work
