"""The service scenario (kexecfw.lab.service): the README's "Use it on a server" block is what the guest runs;
and (slow) one real run in the full-OS guest - install, enable, reboot with the reservation, status, the crash
self-test, the capture boot's save and reboot, list and status - with the dump read back on the host."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kexecfw.lab.errors import LabError
from kexecfw.lab.fullos import BaseImage, make_ext4
from kexecfw.lab.result import LabResult, Phase
from kexecfw.lab.service import (CRASH_PROLOGUE, _find_dump, _guest_line, _host_check, apt_packages,
                                 host_makedumpfile, kdump_tools_crashkernel, readme_boots, readme_commands)
from kexecfw.lab.targets import HOST_ARCH
from tests.conftest import oracle, oracle_module


def test_the_guest_runs_the_readme_block_in_three_boots() -> None:
    lines = readme_commands()
    boots = readme_boots(lines)
    assert [[name for name, _ in b] for b in boots] == [
        ["apt-get", "python3", "pip-install", "ln", "kdump-enable"],
        ["kdump-status", "kdump-test"],
        ["kdump-list", "kdump-status"]]
    # every README line but `reboot` is a step, verbatim
    assert [line for b in boots for _, line in b] == [ln for ln in lines if ln.split("#")[0].strip() != "reboot"]
    assert apt_packages(lines[0]) == ["python3-venv", "initramfs-tools"]


def test_guest_lines_run_the_readme_verbatim(tmp_path: Path) -> None:
    line = "kexecfw kdump status       # exit 0: armed"
    assert _guest_line("kdump-status", line) == (
        "lab_step kdump-status sh -c 'kexecfw kdump status       # exit 0: armed'\n"
        "lab_step kdump-status-json sh -c 'kexecfw kdump status --json'\n")
    crash = _guest_line("kdump-test", "kexecfw kdump test --yes-crash-this-machine")
    assert crash == CRASH_PROLOGUE + "sh -c 'kexecfw kdump test --yes-crash-this-machine' > /dev/console 2>&1\n"
    assert _guest_line("apt-get", "apt-get install python3-venv initramfs-tools").startswith(
        "lab_step apt-get dpkg-query -W")


def test_readme_without_the_section_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Other\n\n```sh\ntrue\n```\n")
    with pytest.raises(LabError, match="no '## Use it on a server' section"):
        readme_commands(readme)


def test_find_dump_in_both_layouts(tmp_path: Path) -> None:
    ours = tmp_path / "kexecfw" / "20261205-001500"
    ours.mkdir(parents=True)
    (ours / "dmesg.txt").write_text("log")
    (ours / "vmcore.kdump").write_bytes(b"KDUMP   ")
    assert _find_dump(tmp_path / "kexecfw") == (ours / "vmcore.kdump", ours / "dmesg.txt")
    theirs = tmp_path / "kdump-tools" / "202612050015"
    theirs.mkdir(parents=True)
    (theirs / "dmesg.202612050015").write_text("log")
    (theirs / "dump.202612050015").write_bytes(b"KDUMP   ")
    (tmp_path / "kdump-tools" / "kexec_cmd").write_text("kexec -p ...")
    assert _find_dump(tmp_path / "kdump-tools") == (theirs / "dump.202612050015", theirs / "dmesg.202612050015")
    assert _find_dump(tmp_path / "absent") == (None, None)


def _image_with(tmp_path: Path, files: dict[str, str]) -> BaseImage:
    tree = tmp_path / "tree"
    for name, text in files.items():
        (tree / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tree / name.lstrip("/")).write_text(text)
    root = make_ext4(tmp_path / "root.img", 16, tree)
    return BaseImage(root=root, kernel=root, initrd=root, release="6.1.0-0-test", arch="x86_64", generation="6.1",
                     python="3.11", packages={}, build_seconds={})


def test_kdump_tools_reservation_is_read_from_its_grub_snippet_in_the_image(tmp_path: Path) -> None:
    oracle("debugfs", "e2fsprogs")
    image = _image_with(tmp_path, {"/etc/default/grub.d/kdump-tools.cfg":
                                   'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=384M-:128M"\n'})
    assert kdump_tools_crashkernel(image) == "384M-:128M"
    bare = _image_with(tmp_path / "bare", {"/etc/hostname": "x\n"})
    with pytest.raises(LabError, match="has no crashkernel=.*is kdump-tools installed"):
        kdump_tools_crashkernel(bare)


def test_the_host_reads_its_own_architecture_with_its_makedumpfile(tmp_path: Path) -> None:
    found = oracle("makedumpfile", "makedumpfile")
    assert host_makedumpfile(HOST_ARCH, "6.1", tmp_path) == [str(found)]


def test_a_broken_dump_is_recorded_reader_by_reader_and_fails_only_when_required(tmp_path: Path) -> None:
    mdf = oracle("makedumpfile", "makedumpfile")
    oracle_module("drgn", "pip install drgn")
    dump = tmp_path / "dump.202612050000"
    dump.write_bytes(b"\x7fELF" + bytes(60))   # an ELF header and nothing a reader can use
    phases: list[Phase] = []
    result = LabResult(directory=tmp_path, arch=HOST_ARCH, scenario="service", loader="kdump-tools",
                       generation="6.1", kernel_release="6.1.0-0-test", phases=phases)

    def add(name, ok, required=True, seconds=None, detail=""):
        phases.append(Phase(name, bool(ok), required, seconds, detail))

    checks = _host_check(result, dump, add, [str(mdf)], required=False)
    readers = checks["readers"]
    assert set(readers) == {"kexecfw vmcore info", "kexecfw vmcore dmesg has the panic", "makedumpfile --dump-dmesg",
                            "drgn reads the same pages as kexecfw"}
    assert not any(r["ok"] for r in readers.values())
    assert all(r["detail"] for r in readers.values())          # what each said, for the comparison
    assert phases and not any(p.required for p in phases)


@pytest.fixture(scope="module", params=["x86_64", "arm64"])
def service_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One run of the kexecfw service scenario per architecture for every assert below (about 10 min each
    under TCG on 2 busy cores, arm64 as x86_64; the arm64 image is built once per machine, ~30 min)."""
    from kexecfw.lab.service import run
    result = run(request.param, "kexecfw", keep=tmp_path_factory.mktemp("service") / "run", timeout=900)
    print(result.summary())
    if not result.ok and capture_kernel_never_started(result.directory):
        # Seen once in about six x86_64 runs under TCG (kexec_file_load, the kernel's own purgatory): the
        # machine reset within seconds of the crash before the capture kernel printed its first line. A
        # kdump service cannot act before its kernel runs; the run is repeated once, and said so loudly.
        import warnings
        warnings.warn(f"{request.param}: the capture kernel never started (QEMU reset after the crash, no "
                      f"console line; {result.directory}): running the scenario once more")
        result = run(request.param, "kexecfw", keep=tmp_path_factory.mktemp("service") / "rerun", timeout=900)
        print(result.summary())
    return result


def capture_kernel_never_started(directory: Path) -> bool:
    """The crash boot's console ends with the crashed kernel's last words: no capture kernel line after it."""
    console = directory / "boot2-status-test" / "console.log"
    if not console.is_file():
        return False
    text = console.read_bytes()
    crash = text.rfind(b"Kernel panic - not syncing")
    return crash >= 0 and b"Linux version" not in text[crash:]


def test_a_capture_kernel_that_never_started_is_told_apart(tmp_path: Path) -> None:
    crash = b"[   45.6] Kernel panic - not syncing: sysrq triggered crash\n[   45.6] Kernel Offset: 0x1e400000\n"
    (tmp_path / "boot2-status-test").mkdir()
    console = tmp_path / "boot2-status-test" / "console.log"
    console.write_bytes(b"[    0.0] Linux version 6.1.0-57-cloud-amd64\n" + crash)
    assert capture_kernel_never_started(tmp_path)
    console.write_bytes(b"[    0.0] Linux version 6.1.0-57-cloud-amd64\n" + crash + b"[    0.0] Linux version 6.1.0\n")
    assert not capture_kernel_never_started(tmp_path)
    console.write_bytes(b"[    0.0] Linux version 6.1.0-57-cloud-amd64\nno crash\n")
    assert not capture_kernel_never_started(tmp_path)


@pytest.mark.slow
def test_service_scenario_passes(service_run) -> None:
    failed = [f"{p.name}: {p.detail}" for p in service_run.phases if p.required and not p.ok]
    assert service_run.ok, failed


@pytest.mark.slow
def test_service_status_armed_then_selftest_passed(service_run) -> None:
    out = service_run.directory
    before = json.loads((out / "boot2-status-test/runs/1/steps/kdump-status-json.out").read_text())
    after = json.loads((out / "boot3-list-status/runs/1/steps/kdump-status-json.out").read_text())
    assert before["armed"] is True and after["armed"] is True
    assert before["loaded"]["cmdline"].endswith("systemd.unit=kexecfw-kdump-save.service")
    assert "crashkernel=" not in before["loaded"]["cmdline"]
    assert after["selftest"]["result"] == "passed"
    assert after["selftest"]["dump"] == after["dumps"][-1]["name"]


@pytest.mark.slow
def test_service_dump_listed_and_read_on_the_host(service_run) -> None:
    numbers = service_run.settings["numbers"]
    listed = numbers["listed"]
    assert listed["complete"] is True and listed["release"] == service_run.kernel_release
    assert listed["panic"].endswith("Kernel panic - not syncing: sysrq triggered crash")
    assert {"dmesg.txt", "vmcore.kdump", "summary.json"} <= set(numbers["saved_files"])
    assert "sysrq: Trigger a crash" in (service_run.directory / "host-dmesg.txt").read_text()
    assert 0 < numbers["panic_to_saved"] < numbers["panic_to_reboot"] < numbers["panic_to_up"]
    readers = numbers["readers"]   # kexecfw, makedumpfile (the guest's own under qemu-user for arm64) and drgn
    assert {"makedumpfile --dump-dmesg", "drgn reads the release at init_uts_ns"} <= set(readers)
    assert all(r["ok"] for r in readers.values()), readers


@pytest.fixture(scope="module")
def kdump_tools_arm64_run(tmp_path_factory: pytest.TempPathFactory):
    """Debian's kdump-tools on the arm64 guest, 2 GiB (its GRUB snippet reserves nothing below 2G): ~3 min
    under TCG once its image is built (~45 min, once per machine)."""
    from kexecfw.lab.service import run
    result = run("arm64", "kdump-tools", mem=2048, keep=tmp_path_factory.mktemp("service") / "kdt", timeout=900)
    print(result.summary())
    return result


@pytest.mark.slow
def test_kdump_tools_on_arm64_6_1_saves_a_broken_dump_and_calls_it_saved(kdump_tools_arm64_run) -> None:
    """kexec-tools 2.0.25 finds no _text in 6.1's kallsyms, so its elfcorehdr has no usable page_offset: in the
    capture boot makedumpfile cannot read the page tables, and kdump-tools keeps an empty dump (the pipeline's
    status is the compressor's) and says it saved it. The kexecfw run on the same kernel reads in full."""
    result = kdump_tools_arm64_run
    assert result.ok, [f"{p.name}: {p.detail}" for p in result.phases if p.required and not p.ok]
    console = (result.directory / "boot1-load-crash" / "console.log").read_text(errors="replace")
    assert "Can't get the symbol of _text to calculate page_offset." in console      # kexec -p at load
    assert "vaddr_to_paddr_arm64: Can't read pgd" in console                          # makedumpfile, capture
    assert "kdump-tools: saved vmcore in /var/crash/" in console
    numbers = result.settings["numbers"]
    assert numbers["dump_bytes"] == 0 and not any(n.startswith("dmesg") for n in numbers["saved_files"])
    readers = numbers["readers"]
    assert {"kexecfw vmcore info", "makedumpfile --dump-dmesg", "drgn reads the same pages as kexecfw"} <= set(readers)
    assert not any(r["ok"] for r in readers.values()), readers
    assert "is empty: not a crash dump" in readers["kexecfw vmcore info"]["detail"]
