"""The plugin system: a third-party architecture added without touching the core."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import kexecfw.hookspecs as hookspecs
from kexecfw.load import plan_load
from kexecfw.model import KEXEC_ON_CRASH, LoadOptions
from kexecfw.pluginmanager import Hooks, describe_plugins, new_plugin_manager
from kexecfw.sysroot import Sysroot
from tests import toyarch

REPO = Path(__file__).resolve().parent.parent


def toy_sysroot(tmp_path: Path) -> Sysroot:
    root = tmp_path / "sysroot"
    files = {
        "proc/iomem": "00000000-00000fff : reserved\n00001000-3fffffff : System RAM\n"
                      "  01000000-01ffffff : Kernel code\n  20000000-2fffffff : Crash kernel\n",
        "proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/vda crashkernel=256M quiet\n",
        "sys/kernel/vmcoreinfo": "3ff00000 1000\n",
        "sys/devices/system/cpu/possible": "0-1\n",
        "sys/devices/system/cpu/cpu0/crash_notes": "3fe00000\n",
        "sys/devices/system/cpu/cpu0/crash_notes_size": "400\n",
        "sys/devices/system/cpu/cpu1/crash_notes": "3fe01000\n",
        "sys/devices/system/cpu/cpu1/crash_notes_size": "400\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return Sysroot(root)


def test_toy_plugin_is_called_through_the_whole_load(tmp_path):
    sysroot = toy_sysroot(tmp_path)
    kernel = tmp_path / "toy.img"
    kernel.write_bytes(toyarch.MAGIC + b"\x90" * 5000)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"\x07" * 9000)
    hooks = Hooks(new_plugin_manager(extra=[toyarch], entry_points=False))
    toyarch.calls.clear()
    plan, ctx = plan_load(LoadOptions(kernel=kernel, initrd=initrd, cmdline="console=ttyS0", panic=True),
                          sysroot, arch="toy", hooks=hooks)
    assert toyarch.calls == ["probe", "place_kernel", "elfcore_info", "boot_params"]
    names = [s.name for s in plan.segments]
    assert names == ["kernel", "initrd", "elfcorehdr", "bootinfo"]
    crash = plan.crash_region
    assert all(crash.contains(s.range) for s in plan.segments)
    assert plan.flags == KEXEC_ON_CRASH | (0x7777 << 16)
    assert plan.entry == plan.segment("kernel").mem and plan.entry % (2 << 20) == 0
    hdr = plan.segment("elfcorehdr")
    assert hdr.mem + hdr.memsz == crash.end  # top-down, like the kernel and kexec-tools
    assert f"elfcorehdr={hdr.mem:#x}" in plan.cmdline
    # the core's default initrd placement (toy64 has none of its own): just above the kernel
    assert plan.segment("initrd").mem >= plan.segment("kernel").range.end


def toyarch_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution on sys.path whose ``kexecfw`` entry point is the toy64 architecture."""
    dist = tmp_path / "site"
    (dist / "kexecfw_toyarch-1.0.dist-info").mkdir(parents=True)
    (dist / "kexecfw_toyarch-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kexecfw-toyarch\nVersion: 1.0\n")
    (dist / "kexecfw_toyarch-1.0.dist-info" / "entry_points.txt").write_text("[kexecfw]\ntoy64 = toyarch_ep\n")
    (dist / "toyarch_ep.py").write_text((REPO / "tests" / "toyarch.py").read_text())
    monkeypatch.syspath_prepend(str(dist))


def test_third_party_plugin_found_through_entry_point(tmp_path, monkeypatch):
    toyarch_distribution(tmp_path, monkeypatch)
    pm = new_plugin_manager(entry_points=True)
    hooks = Hooks(pm)
    assert hooks.arch("toy64").elf_machine == 0x7777
    found = {p["name"]: p for p in describe_plugins(pm)}
    assert "toy64" in found and "kexecfw_probe_kernel" in found["toy64"]["hooks"]
    # the in-repo arches are registered once, as built-ins, though their entry points exist too
    assert [p["name"] for p in describe_plugins(pm)].count("arm64") == 1


def test_entry_points_are_read_only_for_an_architecture_no_builtin_serves(tmp_path, monkeypatch):
    toyarch_distribution(tmp_path, monkeypatch)
    monkeypatch.delenv("KEXECFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pm = new_plugin_manager()
    hooks = Hooks(pm)
    assert hooks.arch("x86_64").name == "x86_64" and hooks.arch_for_machine(183).name == "arm64"
    assert pm.get_plugin("toy64") is None                 # a built-in load scans no entry points
    assert hooks.arch("toy64").elf_machine == 0x7777      # an unknown one does, once
    assert pm.get_plugin("toy64") is not None
    assert "toy64" in {p["name"] for p in describe_plugins(new_plugin_manager())}   # so does a listing


def test_blocked_plugin_is_not_registered(monkeypatch):
    monkeypatch.setenv("KEXECFW_BLOCK_PLUGINS", "x86_64")
    hooks = Hooks(new_plugin_manager(entry_points=False))
    assert sorted(a.name for a in hooks.architectures()) == ["arm64", "riscv64"]


def test_misspelt_hook_fails_loudly():
    from kexecfw import hookimpl

    class Bad:
        @hookimpl
        def kexecfw_probe_kernal(self, ctx):  # noqa: D401 - deliberate typo
            return None

    import pluggy
    with pytest.raises(pluggy.PluginValidationError):
        new_plugin_manager(extra=[Bad()], entry_points=False)


def test_every_hook_is_documented_and_prefixed():
    specs = [name for name in dir(hookspecs) if name.startswith("kexecfw_")]
    assert len(specs) >= 10
    readme_and_doc = hookspecs.__doc__ or ""
    for name in specs:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, f"{name} needs a docstring for plugin authors"
        assert hasattr(fn, "kexecfw_spec"), f"{name} is not marked as a hook spec"
        # which plugins the core calls it on: every plugin, or the architecture's only
        assert "Called on every plugin" in fn.__doc__ or "plugin only" in fn.__doc__ or \
            "serving ``machine`` only" in fn.__doc__, f"{name}'s docstring must say which plugins it is called on"
    load_hooks = [n for n in specs if n != "kexecfw_architectures"]
    for name in load_hooks:
        if name in ("kexecfw_relocation_types",):
            continue
        assert name in readme_and_doc or name.replace("kexecfw_", "") in readme_and_doc, \
            f"{name} is missing from the load order in hookspecs' module docstring"


def test_plugins_command_lists_both_architectures():
    import subprocess
    out = subprocess.run([sys.executable, "-m", "kexecfw", "plugins", "--json"], capture_output=True, text=True,
                         check=True).stdout
    import json
    doc = json.loads(out)
    archs = {a for p in doc["plugins"] for a in p["architectures"]}
    assert {"arm64", "x86_64"} <= archs


# --- the capture side: each plugin's capture module, found without the plugin manager --------------

def test_each_machines_capture_facts_come_from_its_plugin():
    from kexecfw.machines import machine_capture, machine_for_uts
    from kexecfw.vmcore.bounds import ANY_ARCH, arch_bounds
    for machine, name, uts in ((62, "x86_64", "x86_64"), (183, "arm64", "aarch64"), (183, "arm64", "arm64"),
                               (243, "riscv64", "riscv64")):
        capture = machine_capture(machine)
        assert capture.name == name and arch_bounds(machine) is capture.bounds
        assert machine_for_uts(uts) == machine
    assert machine_capture(0x7777) is None and machine_for_uts("toy64") == 0 and arch_bounds(0x7777) is ANY_ARCH


TOY_CAPTURE = '''
from kexecfw.machines import MachineCapture, RegisterLayout
from kexecfw.vmcore.bounds import ArchBounds
from kexecfw.vmcore.kmem import Translator


class ToyTranslator(Translator):
    page_size = 16384

    def linear(self, vaddr):
        return vaddr - 0xFFFF800000000000 if vaddr >= 0xFFFF800000000000 else None


CAPTURE = MachineCapture(0x7777, ("toy64",), ArchBounds("toy64", (16384,), 40),
                         RegisterLayout(["r0", "lr", "sp", "pc"], pc="pc", sp="sp", lr="lr"), lambda info: ToyTranslator())
'''


def test_a_third_party_architecture_brings_its_capture_side(tmp_path, monkeypatch):
    """An installed package named by a ``kexecfw`` entry point, with hooks.py and capture.py: the plugin
    manager registers its hooks, the dump readers use its capture module; no core module names it."""
    import struct
    import sys
    from kexecfw.elfnotes import Note
    from kexecfw.machines import machine_capture, machine_for_uts
    from kexecfw.vmcore.bounds import check_page_size
    from kexecfw.vmcore.kmem import translator_for
    from kexecfw.vmcore.prstatus import parse_prstatus
    from kexecfw.vmcoreinfo import VmcoreInfo
    site = tmp_path / "site"
    (site / "kexecfw_toypkg-1.0.dist-info").mkdir(parents=True)
    (site / "kexecfw_toypkg-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kexecfw-toypkg\n"
                                                                   "Version: 1.0\n")
    (site / "kexecfw_toypkg-1.0.dist-info" / "entry_points.txt").write_text("[kexecfw]\ntoy64 = toypkg\n")
    (site / "toypkg").mkdir()
    (site / "toypkg" / "__init__.py").write_text("")
    (site / "toypkg" / "hooks.py").write_text((REPO / "tests" / "toyarch.py").read_text())
    (site / "toypkg" / "capture.py").write_text(TOY_CAPTURE)
    monkeypatch.syspath_prepend(str(site))

    capture = machine_capture(0x7777)
    assert capture.name == "toy64" and machine_for_uts("toy64") == 0x7777
    assert "toypkg.hooks" not in sys.modules               # the dump readers import no hook code
    assert check_page_size(16384, 0x7777, "toy") == 16384
    assert translator_for(0x7777, VmcoreInfo.parse(b"")).linear(0xFFFF800000001000) == 0x1000
    regs = struct.pack("<4Q", 0, 0xA, 0x5, 0xC)
    state = parse_prstatus(Note(b"CORE", 1, bytes(112) + regs, 0), 0, Hooks().prstatus_registers(0x7777))
    assert (state.pc, state.sp, state.lr) == (0xC, 0x5, 0xA)

    pm = new_plugin_manager(entry_points=True)
    assert Hooks(pm).arch("toy64").elf_machine == 0x7777
    assert {p["name"]: p["module"] for p in describe_plugins(pm)}["toy64"] == "toypkg.hooks"


def test_a_broken_capture_module_is_one_line(tmp_path, monkeypatch):
    from kexecfw.errors import KexecfwError
    from kexecfw.machines import machine_capture
    site = tmp_path / "site"
    (site / "kexecfw_badpkg-1.0.dist-info").mkdir(parents=True)
    (site / "kexecfw_badpkg-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kexecfw-badpkg\n"
                                                                   "Version: 1.0\n")
    (site / "kexecfw_badpkg-1.0.dist-info" / "entry_points.txt").write_text("[kexecfw]\nbad64 = badpkg\n")
    (site / "badpkg").mkdir()
    (site / "badpkg" / "__init__.py").write_text("")
    (site / "badpkg" / "capture.py").write_text("import no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(KexecfwError) as err:
        machine_capture(0x4242)
    assert "badpkg.capture" in str(err.value) and "no_such_module_anywhere" in str(err.value)
    assert "\n" not in str(err.value)
