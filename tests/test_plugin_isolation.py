"""A plugin implements its own architecture only: no plugin imports another (DESIGN.md, "Hooks"), and the core
calls a plugin's hooks for its own architecture only.

What architectures share lives in the core (kexecfw.dtboot, kexecfw.flatimage, kexecfw.running).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from kexecfw import hookimpl
from kexecfw.model import ArchSpec
from tests.conftest import REPO

PLUGINS = REPO / "plugins"
PACKAGE = "kexecfw.plugins"


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of each import in ``path``, a module of ``package``; relative imports
    resolved, ``from kexecfw.plugins import x`` counted as importing kexecfw.plugins.x."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names if module == PACKAGE)
    return found


def foreign_imports(plugin_dir: Path) -> list[str]:
    own = f"{PACKAGE}.{plugin_dir.name}"
    bad = []
    for path in sorted(plugin_dir.rglob("*.py")):
        sub = path.relative_to(plugin_dir).parent.parts
        package = ".".join((own, *sub))
        for line, module in imported_modules(path, package):
            if module.startswith(PACKAGE + ".") and not (module == own or module.startswith(own + ".")):
                bad.append(f"{path.relative_to(plugin_dir.parent)}:{line} imports {module}")
    return bad


def plugin_dirs() -> list[Path]:
    return sorted(p for p in PLUGINS.iterdir() if (p / "__init__.py").is_file())


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    plugin = tmp_path / "toy"
    (plugin / "sub").mkdir(parents=True)
    (plugin / "__init__.py").write_text("from kexecfw.plugins.toy import a\nimport kexecfw.plugins.toy.b\n"
                                        "from . import c\nfrom kexecfw import dtboot\n")
    (plugin / "sub" / "x.py").write_text("from kexecfw.plugins.arm64.image import unwrap\n"
                                         "import kexecfw.plugins.x86_64\nfrom kexecfw.plugins import riscv64\n"
                                         "def f():\n    from ...arm64 import placement\n")
    assert foreign_imports(plugin) == [
        f"toy/sub/x.py:{n} imports {m}"
        for n, m in ((1, "kexecfw.plugins.arm64.image"), (2, "kexecfw.plugins.x86_64"),
                     (3, "kexecfw.plugins.riscv64"), (5, "kexecfw.plugins.arm64"))]


def test_no_plugin_imports_another() -> None:
    dirs = plugin_dirs()
    assert {p.name for p in dirs} >= {"arm64", "riscv64", "x86_64"}
    bad = [line for d in dirs for line in foreign_imports(d)]
    assert not bad, "a plugin imports another plugin; move what they share into the core:\n" + "\n".join(bad)


def test_riscv64_loads_with_the_other_plugins_blocked(tmp_path: Path) -> None:
    """At run time too: the riscv64 plugin plans a panic load with arm64 and x86_64 not registered."""
    head = (REPO / "tests" / "data" / "riscv64-guest" / "Image-head.bin").read_bytes()
    kernel = tmp_path / "Image"
    kernel.write_bytes(head + bytes((1 << 20) - len(head)))
    code = ("import sys; from kexecfw.cli import main; code = main(sys.argv[1:]); "
            "print(code, *sorted(m for m in sys.modules if m.startswith('kexecfw.plugins.')), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "KEXECFW_DISABLE_PLUGIN_AUTOLOAD"}
    env["KEXECFW_BLOCK_PLUGINS"] = "arm64,x86_64"
    run = subprocess.run([sys.executable, "-c", code, "--sysroot", str(REPO / "tests/data/riscv64-guest/snapshot"),
                          "load", "-p", "--dry-run", "--json", str(kernel)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0 and '"arch": "riscv64"' in run.stdout, run.stderr
    loaded = [m for m in run.stderr.split() if m.startswith("kexecfw.plugins.")]
    assert "kexecfw.plugins.riscv64.placement" in loaded
    assert not [m for m in loaded if not m.startswith("kexecfw.plugins.riscv64")], loaded


# --- at run time: the core calls a hook on its architecture's plugin only ---------------------------

class Spy:
    """A plugin serving "spy64" that implements every hook with a context or an ELF machine and records
    each call it gets (returning None, so the real architecture answers)."""

    ARCH = ArchSpec(name="spy64", aliases=(), elf_machine=0x5959, nr_kexec_load=-1)

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def kexecfw_architectures(self) -> list[ArchSpec]:
        return [self.ARCH]

    @hookimpl
    def kexecfw_memory_map(self, ctx): self.calls.append("memory_map")

    @hookimpl
    def kexecfw_probe_kernel(self, ctx): self.calls.append("probe_kernel")

    @hookimpl
    def kexecfw_place_kernel(self, ctx): self.calls.append("place_kernel")

    @hookimpl
    def kexecfw_place_initrd(self, ctx): self.calls.append("place_initrd")

    @hookimpl
    def kexecfw_elfcore_info(self, ctx): self.calls.append("elfcore_info")

    @hookimpl
    def kexecfw_boot_params(self, ctx): self.calls.append("boot_params")

    @hookimpl
    def kexecfw_purgatory(self, ctx): self.calls.append("purgatory")

    @hookimpl
    def kexecfw_relocation_types(self, machine): self.calls.append("relocation_types")

    @hookimpl
    def kexecfw_finalize_plan(self, ctx): self.calls.append("finalize_plan")

    @hookimpl
    def kexecfw_plan_load(self, ctx): self.calls.append("plan_load")


class Observer:
    """A plugin that serves no architecture: called for every one."""

    def __init__(self) -> None:
        self.archs: list[str] = []

    @hookimpl
    def kexecfw_finalize_plan(self, ctx) -> None:
        self.archs.append(ctx.arch.name)


def panic_loads(tmp_path: Path) -> list[tuple[str, Path, Path]]:
    """(arch, sysroot, kernel) of a panic load per in-repo architecture (riscv64's kernel is its real
    header padded: enough to plan)."""
    from tests.conftest import fixture_kernel, fixture_path
    head = (REPO / "tests" / "data" / "riscv64-guest" / "Image-head.bin").read_bytes()
    riscv = tmp_path / "Image"
    riscv.write_bytes(head + bytes((1 << 20) - len(head)))
    return [("riscv64", REPO / "tests/data/riscv64-guest/snapshot", riscv),
            ("x86_64", fixture_path("x86_64", "sysroot"), fixture_kernel("x86_64")),
            ("arm64", fixture_path("arm64", "sysroot"), fixture_kernel("arm64"))]


def test_a_plugin_is_never_called_for_another_architecture(tmp_path: Path) -> None:
    from kexecfw.load import plan_load
    from kexecfw.model import LoadOptions
    from kexecfw.pluginmanager import HookRecorder, Hooks, new_plugin_manager
    from kexecfw.sysroot import Sysroot
    spy, observer = Spy(), Observer()
    pm = new_plugin_manager(extra=[spy, observer], entry_points=True)
    hooks = Hooks(pm)
    served = {name: {a.name for a in plugin.kexecfw_architectures()}
              for name, plugin in pm.list_name_plugin() if hasattr(plugin, "kexecfw_architectures")}
    for arch, sysroot, kernel in panic_loads(tmp_path):
        with HookRecorder(pm) as rec:
            plan, _ = plan_load(LoadOptions(kernel=kernel, panic=True, skip_sha256=True), Sysroot(sysroot),
                                arch=arch, hooks=hooks)
        assert plan.arch == arch
        called = {c.hook for c in rec.calls}
        assert {"kexecfw_probe_kernel", "kexecfw_boot_params", "kexecfw_elfcore_info"} <= called
        strangers = {(c.hook, p) for c in rec.calls for p in c.implementers
                     if p in served and arch not in served[p] and c.hook != "kexecfw_architectures"}
        assert not strangers, f"{arch} load called other architectures' plugins: {sorted(strangers)}"
    assert spy.calls == []
    assert observer.archs == ["riscv64", "x86_64", "arm64"]
    # and its own architecture's calls do reach it
    from kexecfw.model import KernelFile, LoadContext
    ctx = LoadContext(arch=hooks.arch("spy64"), sysroot=Sysroot(tmp_path), options=LoadOptions(kernel=tmp_path))
    assert hooks.probe_kernel(ctx, KernelFile(tmp_path / "k", b"")) is None
    assert hooks.relocation_types(0x5959) == {}
    assert spy.calls == ["probe_kernel", "relocation_types"]
