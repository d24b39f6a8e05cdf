"""What the lab boots: guest architectures and Debian kernel generations.

An :class:`ArchTarget` says how QEMU emulates a guest and which Debian packages
it needs; a :class:`Generation` says which Debian suite provides the kernel and
the guest userland (Debian 12 for 6.1, Debian 13 for 6.12).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

from kexecfw.errors import KexecfwError


@dataclass(frozen=True)
class ArchTarget:
    name: str                     # kexecfw's name: arm64, x86_64
    deb_arch: str                 # Debian's: arm64, amd64
    triplet: str                  # multiarch triplet: aarch64-linux-gnu
    kernel_metapackage: str       # depends on the ABI package, e.g. linux-image-6.1.0-NN-arm64
    qemu_system: str              # qemu-system-aarch64
    qemu_user: str                # qemu-aarch64-static: runs guest binaries on a host of another arch
    machine_args: tuple[str, ...]  # -M/-cpu
    console: str                  # serial console device in the guest
    virtio_blk_device: str        # QEMU device for a virtio disk
    virtio_modules: tuple[str, ...]  # modules (or built-ins) the guest needs for virtio-blk, in load order
    pip_platform: str             # wheel platform tag for guest-arch binary wheels
    kernel_args: str = ""         # added to every kernel command line of the guest
    # Debian builds no kexec-tools for some architectures (riscv64 in trixie): then the guest has
    # no `kexec` and no `vmcore-dmesg`, and the lab's kexec-tools steps cannot run.
    kexec_tools: bool = True
    # Where the lab takes kexec-tools from when the release builds none: another suite's package
    # (riscv64: sid's 2.0.32, the only released riscv loader; it needs only a glibc trixie has).
    kexec_tools_suite: str | None = None
    # Debian's kernels build kexec_file_load (CONFIG_KEXEC_FILE); without it kexec-tools is told
    # to use kexec_load (-c) rather than left to find out.
    kexec_file_load: bool = True
    # /boot/<prefix><release> in the kernel package: Debian names an uncompressed image vmlinux-
    # (riscv64 ships the flat Image, with its EFI stub header), a compressed one vmlinuz-.
    image_prefix: str = "vmlinuz-"
    # the kernel generations Debian has for it, the default first (Debian 12 has no riscv64 release)
    generations: tuple[str, ...] = ("6.1", "6.12")


ARCHES: dict[str, ArchTarget] = {
    "arm64": ArchTarget(
        name="arm64", deb_arch="arm64", triplet="aarch64-linux-gnu",
        kernel_metapackage="linux-image-arm64",
        qemu_system="qemu-system-aarch64", qemu_user="qemu-aarch64-static",
        # pauth-impdef: the architected QARMA pointer-auth algorithm is very slow under TCG.
        machine_args=("-M", "virt", "-cpu", "max,pauth-impdef=on"),
        console="ttyAMA0", virtio_blk_device="virtio-blk-device",
        virtio_modules=("virtio_mmio", "virtio_blk"),
        pip_platform="manylinux2014_aarch64",
    ),
    "x86_64": ArchTarget(
        name="x86_64", deb_arch="amd64", triplet="x86_64-linux-gnu",
        kernel_metapackage="linux-image-cloud-amd64",
        qemu_system="qemu-system-x86_64", qemu_user="qemu-x86_64-static",
        machine_args=("-M", "pc", "-cpu", "max"),
        console="ttyS0", virtio_blk_device="virtio-blk-pci",
        virtio_modules=("virtio_pci", "virtio_blk"),
        pip_platform="manylinux2014_x86_64",
        # Under TCG on a busy host the IO-APIC timer check can time out and panic
        # ("IO-APIC + timer doesn't work!", seen with 6.12); virtual machines skip it.
        kernel_args="no_timer_check",
    ),
    "riscv64": ArchTarget(
        name="riscv64", deb_arch="riscv64", triplet="riscv64-linux-gnu",
        kernel_metapackage="linux-image-riscv64",
        # QEMU's virt board boots its bundled OpenSBI (-bios default) as M-mode firmware,
        # which hands the kernel over in S-mode with a0 = hart id, a1 = DTB, as kexec does.
        qemu_system="qemu-system-riscv64", qemu_user="qemu-riscv64-static",
        machine_args=("-M", "virt", "-cpu", "rv64", "-bios", "default"),
        console="ttyS0", virtio_blk_device="virtio-blk-device",
        virtio_modules=("virtio_mmio", "virtio_blk"),
        pip_platform="manylinux_2_31_riscv64",
        kexec_tools=False,      # trixie: no kexec-tools (and so no vmcore-dmesg) for riscv64
        kexec_tools_suite="sid",
        kexec_file_load=False,  # trixie's riscv64 kernel: CONFIG_KEXEC_FILE is not set
        image_prefix="vmlinux-",
        generations=("6.12",),
    ),
}

HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())


def needs_emulation(arch: ArchTarget) -> bool:
    """True when the guest's binaries cannot run natively on this host (qemu-user runs them)."""
    return arch.name != HOST_ARCH


ARCH_ALIASES = {"aarch64": "arm64", "amd64": "x86_64", "x86-64": "x86_64", "riscv": "riscv64"}


@dataclass(frozen=True)
class Generation:
    name: str                 # "6.1", "6.12"
    suites: tuple[str, ...]   # apt suites, first is the release
    python: str               # guest Python version, e.g. "3.11"
    host_release: bool        # True when it is the host's own Debian release


GENERATIONS: dict[str, Generation] = {
    "6.1": Generation("6.1", ("bookworm", "bookworm-updates"), "3.11", True),
    "6.12": Generation("6.12", ("trixie", "trixie-updates"), "3.13", False),
}

SECURITY_SUITE_SUFFIX = "-security"


def arch_target(name: str) -> ArchTarget:
    key = ARCH_ALIASES.get(name, name)
    try:
        return ARCHES[key]
    except KeyError:
        raise KexecfwError(f"the lab has no guest architecture {name!r}: use one of {', '.join(ARCHES)}") from None


def generation(name: str) -> Generation:
    try:
        return GENERATIONS[name]
    except KeyError:
        raise KexecfwError(f"unknown kernel generation {name!r}: use one of {', '.join(GENERATIONS)}") from None


def has_kexec_tools(arch: ArchTarget) -> bool:
    """True when the guest gets kexec-tools (kexec, vmcore-dmesg): from its release or another suite."""
    return arch.kexec_tools or arch.kexec_tools_suite is not None


def target_generation(arch: ArchTarget, name: str | None = None) -> Generation:
    """The kernel generation ``name`` of a guest (None: the architecture's default), refused in one
    line when Debian has no such release for it."""
    if name is None:
        name = arch.generations[0]
    gen = generation(name)
    if gen.name not in arch.generations:
        raise KexecfwError(f"Debian has no {gen.name} kernel for {arch.name} (suite {gen.suites[0]}): "
                           f"use --kernel-generation {' or '.join(arch.generations)}")
    return gen


def guest_packages(gen: Generation, arch: ArchTarget | None = None) -> tuple[str, ...]:
    """Userland packages the guest initramfs is made from (libraries are added by dependency)."""
    py = gen.python
    loader = ("kexec-tools",) if arch is None or arch.kexec_tools else ()
    return ("busybox-static", *loader, "makedumpfile",
            f"python{py}-minimal", f"libpython{py}-minimal", f"libpython{py}-stdlib")
