"""What `pip install` ships: every package of the source tree, the plugins under kexecfw.plugins."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def source_packages() -> set[str]:
    names = set()
    for init in REPO.glob("kexecfw/**/__init__.py"):
        names.add(".".join(init.parent.relative_to(REPO).parts))
    for init in REPO.glob("plugins/**/__init__.py"):
        names.add(".".join(("kexecfw",) + init.parent.relative_to(REPO).parts))
    return names


def test_every_source_package_is_declared():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    assert source_packages() <= declared, f"add to pyproject.toml: {sorted(source_packages() - declared)}"
    assert not (REPO / "kexecfw" / "plugins").exists(), "plugins/ must stay outside kexecfw/ in the source tree"


def test_wheel_holds_plugins_and_purgatory_objects(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("kexecfw-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for arch in ("arm64", "x86_64"):
        assert f"kexecfw/plugins/{arch}/__init__.py" in names
        assert f"kexecfw/plugins/{arch}/purgatory/purgatory.ro" in names
    assert "kexecfw/purgatory/__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[kexecfw]" in text and "kexecfw.plugins.arm64" in text
    # the `kexecfw` command is the plain script, its shebang rewritten by the installer
    script = next(n for n in names if n.endswith(".data/scripts/kexecfw"))
    assert zipfile.ZipFile(wheel).read(script).startswith(b"#!python")


def test_installed_command_runs():
    """The installed `kexecfw` script (beside this interpreter) reaches the CLI."""
    command = Path(sys.executable).parent / "kexecfw"
    out = subprocess.run([str(command), "crashkernel", "parse", "--ram", "2G", "256M"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("256 MiB"), out.stdout
