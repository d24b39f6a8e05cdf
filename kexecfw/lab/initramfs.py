"""The guest's initramfs: the userland, kexecfw itself, the /init script and the run's payload.

Layout of the first kernel's initrd (concatenated archives, which the kernel
unpacks one after the other):

* ``userland.cpio.gz`` - busybox, Python, kexec-tools, makedumpfile, modules
  (cached next to the userland: it changes only with the Debian packages);
* ``site.cpio.gz``     - kexecfw from this source tree and its pure-Python
  dependencies, /init and the guest helper (rebuilt every run);
* ``payload.cpio``     - uncompressed, 4-byte aligned: the kernel to load, the
  initrd to give it (the two archives above: the capture kernel runs the same
  /init) and /lab/config.sh with the scenario.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
import io
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

from kexecfw.lab.cpio import CpioWriter, align4
from kexecfw.lab.errors import LabError
from kexecfw.lab.targets import HOST_ARCH, ArchTarget
from kexecfw.lab.userland import Userland, run_guest_python

SITE = "opt/kexecfw/site"        # the guest's PYTHONPATH
COMMAND = "opt/kexecfw/bin/kexecfw"
PURE_PYTHON_DEPS = ("pluggy", "elftools", "fdt")
# binary wheels the guest gets when PyPI has them for its platform, and what is missing without one
GUEST_WHEELS = {"zstandard": "zstd unavailable", "isal": "the zlib engine falls back",
                "deflate": "the zlib engine falls back"}
SITE_CHECK = """
import compileall, py_compile, sys
ok = compileall.compile_dir(sys.argv[1], quiet=1, ddir=sys.argv[2],
                            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
import kexecfw.cli, kexecfw.plugins, pluggy, elftools, fdt
from importlib.metadata import entry_points
if not entry_points(group="kexecfw"):
    sys.exit("the guest's site has no kexecfw entry points")
sys.exit(0 if ok else "byte-compiling the guest's site failed")
"""
BASE_DIRS = ("dev", "proc", "sys", "tmp", "out", "mnt", "run", "etc")


def write_tree(writer: CpioWriter, tree: Path, prefix: str = "") -> None:
    """Add every directory, file and symlink under tree (sorted, parents first)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, tree)
        base = prefix if rel_dir == "." else f"{prefix}/{rel_dir}" if prefix else rel_dir
        if base:
            writer.directory(base, os.stat(dirpath).st_mode & 0o7777)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            rel = f"{base}/{name}" if base else name
            if os.path.islink(path):
                writer.symlink(rel, os.readlink(path))
            else:
                with open(path, "rb") as f:
                    writer.file(rel, f.read(), os.stat(path).st_mode & 0o7777)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


def gzip_cpio(build: Callable[[CpioWriter], None], out: Path) -> None:
    """Write a gzip-compressed cpio archive made by build(writer) to out (atomically)."""
    tmp = out.with_suffix(f"{out.suffix}.{os.getpid()}.tmp")  # concurrent runs may build the same archive
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        writer = CpioWriter(gz)
        build(writer)
        writer.close()
    tmp.replace(out)


def userland_archive(userland: Userland) -> Path:
    """userland.cpio.gz beside the userland tree, built once."""
    out = userland.root.parent / "userland.cpio.gz"
    if out.exists():
        return out

    def build(w: CpioWriter) -> None:
        for d in BASE_DIRS:
            w.directory(d)
        w.char_device("dev/console", 5, 1)  # the kernel opens it for /init before devtmpfs exists
        w.char_device("dev/null", 1, 3, 0o666)
        write_tree(w, userland.root)
        w.symlink("bin/sh", "busybox")

    gzip_cpio(build, out)
    return out


def guest_wheel(arch: ArchTarget, python: str, package: str, wheels: Path) -> Path | None:
    """A binary wheel of package for the guest (pip download, cached); None if PyPI has none."""
    target = wheels / f"{arch.pip_platform}-py{python}"
    target.mkdir(parents=True, exist_ok=True)
    found = sorted(target.glob(f"{package}-*.whl"))
    if not found:
        py_nodot = python.replace(".", "")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               "--only-binary=:all:", "--platform", arch.pip_platform, "--python-version", python,
               "--implementation", "cp", "--abi", f"cp{py_nodot}", "-d", str(target), package]
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        found = sorted(target.glob(f"{package}-*.whl"))
    return found[-1] if found else None


def strip_debug(arch: ArchTarget, path: Path) -> None:
    """Drop debug info from a guest ELF file when a strip for its architecture is installed.

    PyPI's manylinux wheels ship unstripped objects (zstandard's is 10 MB, 1 MB stripped),
    and every MiB of the initramfs is RAM the capture kernel does not have.
    """
    for tool in (f"{arch.triplet}-strip", "strip" if arch.name == HOST_ARCH else None):
        if tool and shutil.which(tool):
            subprocess.run([tool, "--strip-debug", str(path)], capture_output=True)
            return


def build_site(arch: ArchTarget, userland: Userland, site_root: Path, wheels: Path) -> list[str]:
    """Lay out kexecfw and its dependencies as the guest's site dir, byte-compiled and import-checked.

    Returns notes on what is missing (a zstandard wheel for the guest).
    """
    notes = lay_out_site(arch, userland, site_root, wheels)
    compile_site(arch, userland, site_root)
    return notes


def compile_site(arch: ArchTarget, userland: Userland, site_root: Path) -> None:
    # Byte-compile with the guest's Python (a TCG guest would otherwise compile on every
    # import), and import what the guest runs: a broken site fails here, not in a boot.
    site = site_root / SITE
    run_guest_python(arch, userland.root, userland.python, ["-P", "-c", SITE_CHECK, str(site), f"/{SITE}"],
                     extra_env={"PYTHONPATH": str(site)})


def tree_digest(tree: Path) -> str:
    """sha256 over every file's path, mode and content (symlinks by target), in sorted order."""
    h = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        rel = str(path.relative_to(tree)).encode()
        if path.is_symlink():
            h.update(b"L" + rel + b"\0" + os.readlink(path).encode() + b"\0")
        elif path.is_file():
            h.update(b"F" + rel + b"\0" + oct(path.stat().st_mode).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def cached_site_archive(arch: ArchTarget, userland: Userland, workdir: Path, cache: Path) -> tuple[Path, list[str]]:
    """site.cpio.gz for this source tree: compiled by the guest's Python once per distinct content.

    Byte-compiling under qemu-user takes 10-30 s; a test session boots the same
    tree several times.
    """
    site_root = workdir / "site"
    notes = lay_out_site(arch, userland, site_root, cache / "wheels")
    store = cache / "site" / f"{arch.name}-py{userland.python}"
    store.mkdir(parents=True, exist_ok=True)
    archive = store / f"{tree_digest(site_root)}.cpio.gz"
    if not archive.exists():
        compile_site(arch, userland, site_root)
        site_archive(site_root, archive)
        for old in sorted(store.glob("*.cpio.gz"), key=lambda p: p.stat().st_mtime)[:-8]:
            old.unlink(missing_ok=True)  # keep the last few source trees
    archive.touch()
    return archive, notes


def lay_out_site(arch: ArchTarget, userland: Userland, site_root: Path, wheels: Path) -> list[str]:
    """Copy kexecfw, its pure-Python dependencies, the guest's zstandard and /init into site_root."""
    notes: list[str] = []
    site = site_root / SITE
    if site_root.exists():
        shutil.rmtree(site_root)
    site.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")

    def location(module: str) -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise LabError(f"cannot find the {module} package on the host: run setup.sh (pip install -e .)")
        return Path(list(spec.submodule_search_locations)[0])

    shutil.copytree(location("kexecfw"), site / "kexecfw", ignore=ignore)
    # In a source tree plugins/ maps to kexecfw.plugins; in an installed kexecfw it is already inside.
    shutil.copytree(location("kexecfw.plugins"), site / "kexecfw" / "plugins", ignore=ignore, dirs_exist_ok=True)
    for dep in PURE_PYTHON_DEPS:
        shutil.copytree(location(dep), site / dep, ignore=ignore)
    write_entry_points(site)
    for package, without in GUEST_WHEELS.items():
        wheel = guest_wheel(arch, userland.python, package, wheels)
        if wheel is None:
            notes.append(f"no {package} wheel for {arch.pip_platform} / Python {userland.python}: "
                         f"{without} in the guest")
            continue
        with zipfile.ZipFile(wheel) as z:
            # The package and the libraries auditwheel bundled; zstandard's C backend only: the cffi
            # one doubles the size for nothing.
            z.extractall(site, [n for n in z.namelist() if n.startswith((f"{package}/", f"{package}.libs/"))
                                and "cffi" not in n and not n.endswith(".pyi")])
        for so in [*(site / package).glob("*.so"), *(site / f"{package}.libs").glob("*.so*")]:
            strip_debug(arch, so)
    # The kexecfw command as pip installs it (bin/kexecfw): no runpy, unlike python3 -m kexecfw.
    command = site_root / COMMAND
    command.parent.mkdir(parents=True)
    command.write_text("#!/usr/bin/python3\nfrom kexecfw.cli import run\n\nrun()\n")
    command.chmod(0o755)
    guest_dir = importlib.resources.files("kexecfw.lab") / "guest"
    (site_root / "lab").mkdir()
    for name in ("init", "guest.py"):
        data = (guest_dir / name).read_bytes()
        dest = site_root / ("init" if name == "init" else f"lab/{name}")
        dest.write_bytes(data)
        dest.chmod(0o755)
    return notes


def write_entry_points(site: Path) -> None:
    """kexecfw's distribution metadata (METADATA, entry_points.txt) into the guest's site, as pip
    installs it: architectures registered only by entry point (riscv64) are found there too."""
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        dist = distribution("kexecfw")
    except PackageNotFoundError:
        raise LabError("kexecfw is not installed on the host (its entry points go into the guest): "
                       "run setup.sh (pip install -e .)") from None
    info = site / f"kexecfw-{dist.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kexecfw\nVersion: {dist.version}\n")
    (info / "entry_points.txt").write_text(dist.read_text("entry_points.txt") or "")


def site_archive(site_root: Path, out: Path) -> Path:
    gzip_cpio(lambda w: write_tree(w, site_root), out)
    return out


def concatenate(parts: list[Path], out: BinaryIO) -> int:
    """Write archives one after the other, each starting 4-byte aligned; returns the length."""
    length = 0
    for part in parts:
        pad = align4(length)
        out.write(b"\0" * pad)
        data = part.read_bytes()
        out.write(data)
        length += pad + len(data)
    return length


def payload_archive(kernel: Path, capture_initrd: bytes, config: dict[str, str], out: Path) -> None:
    """The uncompressed archive with the kernel to load, its initrd and the scenario's settings."""
    with open(out, "wb") as f:
        w = CpioWriter(f)
        w.directory("lab")
        text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in config.items())
        w.file("lab/config.sh", text.encode(), 0o644)
        w.file("lab/vmlinuz", kernel.read_bytes(), 0o644)
        w.file("lab/initrd", capture_initrd, 0o644)
        w.close()


def build_initrds(arch: ArchTarget, userland: Userland, workdir: Path, cache: Path,
                  config: dict[str, str]) -> tuple[Path, list[str]]:
    """Build the first kernel's initrd in workdir; returns its path and notes on what is missing."""
    workdir.mkdir(parents=True, exist_ok=True)
    site, notes = cached_site_archive(arch, userland, workdir, cache)
    base_parts = [userland_archive(userland), site]
    buf = io.BytesIO()
    concatenate(base_parts, buf)
    base = buf.getvalue()
    payload = workdir / "payload.cpio"
    payload_archive(userland.kernel, base, config, payload)
    first = workdir / "first-initrd"
    with open(first, "wb") as f:
        f.write(base)
        f.write(b"\0" * align4(len(base)))
        f.write(payload.read_bytes())
    payload.unlink()
    return first, notes
