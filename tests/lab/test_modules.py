"""Module load order for the guest's virtio-blk, resolved from the real Debian kernel packages.

Uses the lab's cache (downloads the kernel package once, ~60 MB, like the lab
itself) and extracts only the virtio modules and modules.builtin from it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kexecfw.lab.errors import LabError
from kexecfw.lab.kernels import debian_kernel_package
from kexecfw.lab.modules import ModuleIndex, module_name
from kexecfw.lab.targets import arch_target

EXPECTED_6_1 = {
    "arm64": {"virtio_mmio", "virtio_blk"},  # virtio and virtio_ring are built into Debian's arm64 kernel
    "x86_64": {"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci", "virtio_blk"},
}


@pytest.fixture(scope="module", params=sorted(EXPECTED_6_1))
def kernel_modules(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ModuleIndex]:
    arch = arch_target(request.param)
    try:
        deb = debian_kernel_package(arch.name, "6.1")
    except LabError as e:
        pytest.fail(f"cannot get the {arch.name} kernel package from the Debian mirror: {e}")
    dest = tmp_path_factory.mktemp(f"modules-{arch.name}")
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", "./lib/modules/*/kernel/drivers/virtio/*",
                    "./lib/modules/*/kernel/drivers/block/virtio_blk.ko*", "./lib/modules/*/modules.builtin"],
                   stdin=tar.stdout, check=True)
    assert tar.wait() == 0
    (moddir,) = (dest / "lib/modules").iterdir()
    return arch.name, ModuleIndex.read(moddir)


def test_virtio_blk_load_order(kernel_modules: tuple[str, ModuleIndex]) -> None:
    arch_name, index = kernel_modules
    order = index.load_order(arch_target(arch_name).virtio_modules)
    assert set(order) == EXPECTED_6_1[arch_name]
    assert order[-1] == "virtio_blk"
    for position, name in enumerate(order):
        for dep in index.dependencies(name):
            assert dep in index.builtin or order.index(dep) < position, f"{dep} must load before {name}"


def test_dependencies_come_from_modinfo(kernel_modules: tuple[str, ModuleIndex]) -> None:
    _arch, index = kernel_modules
    assert not (index.moddir / "modules.dep").exists()  # Debian ships none: depmod runs at install
    blk = index.dependencies("virtio_blk")
    assert all(isinstance(d, str) and d for d in blk)
    assert index.module_bytes("virtio_blk")[:4] == b"\x7fELF"


def test_unknown_module_is_a_clear_error(kernel_modules: tuple[str, ModuleIndex]) -> None:
    _arch, index = kernel_modules
    with pytest.raises(LabError, match="no_such_module"):
        index.load_order(["no_such_module"])


def test_module_names_normalise() -> None:
    assert module_name("kernel/drivers/block/virtio_blk.ko.xz") == "virtio_blk"
    assert module_name("kernel/drivers/virtio/virtio-pci.ko.zst") == "virtio_pci"
    assert module_name("extra/x.ko") == "x"


def test_modules_dep_is_used_when_present(tmp_path: Path) -> None:
    kernel = tmp_path / "kernel/drivers"
    kernel.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (kernel / f"{name}.ko").write_bytes(b"")
    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/c.ko: kernel/drivers/b.ko kernel/drivers/a.ko\nkernel/drivers/b.ko: kernel/drivers/a.ko\n"
        "kernel/drivers/a.ko:\n")
    (tmp_path / "modules.builtin").write_text("")
    assert ModuleIndex.read(tmp_path).load_order(["c"]) == ["a", "b", "c"]
