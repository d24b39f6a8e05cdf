"""Real Debian kernels for tests, benchmarks and notebooks, fetched the way the lab fetches its own.

:func:`debian_kernel` is the one way to get a Debian kernel image outside a lab run. The
package comes through the lab's private apt root (the host's apt state stays as it is, and
an amd64 host gets arm64 or Debian 13 packages), so by default it is the very kernel the lab
boots for that generation; only ``/boot/vmlinuz-<release>`` is taken out of it, into
``<lab cache>/kernels/<suite>-<debian arch>/<package>_<version>_<debian arch>/``.

Without a network, what was fetched before still serves: a named package already extracted
is returned without asking apt, and a package in the apt cache is used when the mirror cannot
be reached. Everything that cannot be had raises :class:`LabError`, whose message says why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from kexecfw.lab.apt import AptRoot
from kexecfw.lab.cache import cache_dir
from kexecfw.lab.errors import LabError
from kexecfw.lab.targets import ArchTarget, arch_target, generation as lab_generation

KERNELS_DIR = "kernels"
IMAGE_PREFIX = "vmlinuz-"


def debian_kernel_package(arch: str, generation: str = "6.1", package: str | None = None,
                          cache: Path | None = None) -> Path:
    """The .deb of a Debian kernel package, downloaded once into the lab's apt cache.

    ``package`` names an ABI package (``linux-image-6.1.0-56-arm64``); by default it is the one
    the generation's kernel metapackage depends on now, as for the lab's guest.
    """
    target = arch_target(arch)
    return _kernel_deb(AptRoot.for_guest(cache_dir(cache), target, lab_generation(generation)), target, package)


def _shelf(arch: str, generation: str, cache: Path | None):
    """The guest's apt root, its target, and where its extracted kernels are kept in the lab cache."""
    base = cache_dir(cache)
    target = arch_target(arch)
    apt = AptRoot.for_guest(base, target, lab_generation(generation))
    return apt, target, base / KERNELS_DIR / apt.root.name


def debian_kernel(arch: str, generation: str = "6.1", package: str | None = None,
                  cache: Path | None = None) -> Path:
    """The kernel image (``vmlinuz-<release>``) of a Debian kernel package, extracted into the lab cache.

    Arguments as for :func:`debian_kernel_package`; the file's name keeps the kernel release.
    """
    apt, target, shelf = _shelf(arch, generation, cache)
    if package:
        extracted = sorted(shelf.glob(f"{package}_*/{target.image_prefix}*"))
        if extracted:
            return extracted[-1]
    deb = _kernel_deb(apt, target, package)
    return _extract_image(deb, shelf / deb.stem, target.image_prefix)


def _kernel_deb(apt: AptRoot, target: ArchTarget, package: str | None) -> Path:
    try:
        name = package or apt.resolve_kernel_package(target.kernel_metapackage)
        return apt.download([name])[name]
    except LabError as e:
        downloaded = apt.downloaded(package or "linux-image-[0-9]*")   # the mirror is out of reach
        if not downloaded:
            what = package or f"the {target.name} kernel"
            raise LabError(f"cannot get {what} from {apt.root.name}: {e}") from None
        return downloaded[-1]


def _extract_image(deb: Path, dest: Path, prefix: str = IMAGE_PREFIX) -> Path:
    """/boot/vmlinuz-* of the package into dest; the rest (modules: hundreds of MB) is not unpacked."""
    found = sorted(dest.glob(f"{prefix}*"))
    if found:
        return found[0]
    # Into a private folder first (a name the lookups' globs never match), renamed when complete:
    # a concurrent or interrupted run never leaves, or sees, half an image.
    partial = dest.with_name(f".partial-{os.getpid()}-{dest.name}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        name = _copy_image_member(deb, partial, prefix)
        try:
            partial.rename(dest)
        except OSError:
            if not (dest / name).is_file():   # lost a race with a complete copy: keep that one
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest / name


def _copy_image_member(deb: Path, dest: Path, prefix: str = IMAGE_PREFIX) -> str:
    """Streams the package's file tree and copies the first /boot/vmlinuz-* into dest; its name."""
    try:
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise LabError("dpkg-deb not found: the lab needs a Debian (apt-based) host") from None
    with dpkg:   # closes both pipes
        assert dpkg.stdout is not None and dpkg.stderr is not None
        try:
            with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
                for member in tar:
                    path = PurePosixPath(member.name)
                    if member.isfile() and path.parent.name == "boot" and path.name.startswith(prefix):
                        source = tar.extractfile(member)
                        assert source is not None
                        with source, open(dest / path.name, "wb") as out:
                            shutil.copyfileobj(source, out)
                        return path.name
        except tarfile.TarError as e:
            raise LabError(f"{deb.name} could not be read: {e}") from None
        finally:
            dpkg.kill()   # once the image is out: the modules that follow it are not wanted
        errors = dpkg.stderr.read().decode(errors="replace").strip()
    raise LabError(f"{deb.name} has no /boot/{prefix}* {errors[-200:]}".rstrip())


def debian_debug_vmlinux(arch: str, generation: str = "6.1", package: str | None = None,
                         cache: Path | None = None) -> Path:
    """The vmlinux with its debug info (DWARF) of a Debian kernel package, what crash needs.

    It comes from the package's ``-dbg`` twin (``linux-image-6.12.118+deb13-riscv64-dbg``, about
    1 GB to download); only ``/usr/lib/debug/boot/vmlinux-<release>`` (300 MB) is extracted, into
    ``<lab cache>/kernels/``. ``package`` names the ABI package; by default the lab's own kernel.
    """
    apt, target, shelf = _shelf(arch, generation, cache)
    if package:
        extracted = sorted(shelf.glob(f"{package}-dbg_*/vmlinux-*"))
        if extracted:
            return extracted[-1]
    try:
        name = (package or apt.resolve_kernel_package(target.kernel_metapackage)) + "-dbg"
        deb = apt.download([name])[name]
    except LabError as e:
        raise LabError(f"cannot get the debug vmlinux of {package or f'the {target.name} kernel'} "
                       f"from {apt.root.name}: {e}") from None
    return _extract_image(deb, shelf / deb.stem, "vmlinux-")
