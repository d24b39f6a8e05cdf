"""The guest's userland: busybox, Python, kexec-tools, makedumpfile, the kernel and its modules.

Built once per (generation, architecture, package versions) from Debian
packages into ``<cache>/guest/<suite>-<arch>/<key>/``: ``root/`` is the tree
the initramfs packs, ``vmlinuz`` the kernel, ``manifest.json`` what was built.
Only the files the guest runs are kept: the libraries come from the
programs' ELF NEEDED entries, the stdlib is pruned and byte-compiled by the
guest's own Python (run on the host through its ld.so, or qemu-user for a
foreign architecture), which also proves that Python works before a boot.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from kexecfw.lab.apt import AptRoot, extract
from kexecfw.lab.elfdeps import elf_needed_and_interp, resolve_in_root, resolve_libraries
from kexecfw.lab.errors import LabError
from kexecfw.lab.modules import ModuleIndex
from kexecfw.lab.targets import ArchTarget, Generation, guest_packages, has_kexec_tools, needs_emulation

BUILD_VERSION = "3"  # bump when the layout of root/ changes
STDLIB_PRUNE = ("idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "test",
                "unittest/test", "distutils/tests", "venv", "turtle.py", "__phello__")
# Where the guest gets each program; found in the packages at that path or under usr/
# (Debian 13 ships merged-/usr packages: /usr/sbin/kexec, /usr/lib64/ld-linux-x86-64.so.2).
# glibc libraries that manylinux wheels (zstandard) link against but no Debian program here needs.
WHEEL_SONAMES = ("libpthread.so.0", "libdl.so.2", "librt.so.1", "libm.so.6")
PROGRAMS = ("bin/busybox", "usr/bin/makedumpfile")
KEXEC_TOOLS_PROGRAMS = ("sbin/kexec", "sbin/vmcore-dmesg")   # only where Debian builds kexec-tools
Log = Callable[[str], None]


@dataclass
class Userland:
    root: Path             # the tree to pack into the initramfs
    kernel: Path           # the kernel image (vmlinuz) the guest boots and kexecs
    release: str           # kernel release, e.g. 6.1.0-56-arm64
    kernel_package: str
    modules: list[str]     # modules to insmod, in order (also in root/lab/modules)
    python: str            # guest Python version
    arch: str
    generation: str

    @classmethod
    def load(cls, path: Path) -> Userland:
        data = json.loads(path.read_text())
        return cls(**{**data, "root": Path(data["root"]), "kernel": Path(data["kernel"])})

    def save(self, path: Path) -> None:
        data = {**asdict(self), "root": str(self.root), "kernel": str(self.kernel)}
        path.write_text(json.dumps(data, indent=2) + "\n")


def _resolve_debs(apt: AptRoot, arch: ArchTarget, gen: Generation, cache: Path) -> tuple[str, dict[str, Path]]:
    """The kernel package and every .deb the guest is built from, downloaded.

    Resolving costs a dozen apt-cache runs; the answer is kept until the package
    lists are refreshed (daily), so a run with everything cached starts at once.
    """
    apt.update()
    record = apt.root / "resolved.json"
    key = {"lists": (apt.root / "lists" / ".updated").stat().st_mtime, "build": BUILD_VERSION,
           "kernel": arch.kernel_metapackage, "packages": list(guest_packages(gen, arch)),
           "kexec_tools_suite": arch.kexec_tools_suite}
    try:
        data = json.loads(record.read_text())
        debs = {name: Path(path) for name, path in data["debs"].items()}
        if data["key"] == key and all(p.is_file() for p in debs.values()):
            return data["kernel_package"], debs
    except (OSError, ValueError, KeyError, TypeError):
        pass
    kernel_package = apt.resolve_kernel_package(arch.kernel_metapackage)
    packages = apt.library_closure(list(guest_packages(gen, arch)))
    debs = apt.download(packages + [kernel_package])
    if not arch.kexec_tools and arch.kexec_tools_suite:
        # only the package: its one library (glibc) comes with the release's own
        other = AptRoot(cache, (arch.kexec_tools_suite,), None, arch.deb_arch)
        debs.update(other.download(["kexec-tools"]))
    tmp = record.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs: readers see old or new, never half
    tmp.write_text(json.dumps({"key": key, "kernel_package": kernel_package,
                               "debs": {n: str(p) for n, p in debs.items()}}, indent=1) + "\n")
    tmp.replace(record)
    return kernel_package, debs


def guest_python_command(arch: ArchTarget, root: Path, python: str) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment that run the guest's Python on this host.

    The guest's own ld.so and libraries are used (through qemu-user's -L prefix
    for a foreign architecture), so a newer Debian's Python runs on an older host.
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONHOME": str(root / "usr"), "PYTHONDONTWRITEBYTECODE": "1",
           "LC_ALL": "C.UTF-8"}
    # The guest's kexecfw runs on this host's kernel here: a test session's syscall guard goes along.
    from kexecfw.guard import TEST_SESSION_ENV
    if os.environ.get(TEST_SESSION_ENV):
        env[TEST_SESSION_ENV] = os.environ[TEST_SESSION_ENV]
    binary = str(root / f"usr/bin/python{python}")
    if needs_emulation(arch):
        return [arch.qemu_user, "-L", str(root), binary], env
    libdirs = f"{root}/lib/{arch.triplet}:{root}/usr/lib/{arch.triplet}"
    interp = elf_needed_and_interp(root / f"usr/bin/python{python}")[1] or ""
    return [str(root / interp.lstrip("/")), "--library-path", libdirs, binary], env


def run_guest_python(arch: ArchTarget, root: Path, python: str, args: list[str],
                     extra_env: dict[str, str] | None = None, timeout: int = 600) -> str:
    argv, env = guest_python_command(arch, root, python)
    env.update(extra_env or {})
    try:
        proc = subprocess.run(argv + args, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise LabError(f"cannot run the guest Python ({e.filename} missing): run the lab's host preparation") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"the guest Python took over {timeout} s for {' '.join(args[:3])}") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        what = " ".join(args[:3]).replace("\n", " ")[:60]
        raise LabError(f"the guest Python failed ({what}): {tail}")
    return proc.stdout


def prepare_userland(arch: ArchTarget, gen: Generation, cache: Path, log: Log = print) -> Userland:
    apt = AptRoot.for_guest(cache, arch, gen)
    kernel_package, debs = _resolve_debs(apt, arch, gen, cache)
    key = hashlib.sha256(("\n".join(sorted(d.name for d in debs.values())) + BUILD_VERSION).encode()).hexdigest()[:16]
    out = cache / "guest" / f"{gen.suites[0]}-{arch.deb_arch}" / key
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per suite and architecture
        return _cached_or_built(arch, gen, debs, kernel_package, out, log)


def _cached_or_built(arch: ArchTarget, gen: Generation, debs: dict[str, Path], kernel_package: str, out: Path,
                     log: Log) -> Userland:
    manifest = out / "manifest.json"
    if manifest.exists():
        return Userland.load(manifest)

    log(f"building the {arch.name} guest userland ({len(debs)} Debian packages, kernel {kernel_package})")
    if out.exists():
        shutil.rmtree(out)
    try:
        userland = _build(arch, gen, debs, kernel_package, out, log)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-built tree (or its 1 GB pkgroot)
        raise
    for older in out.parent.iterdir():  # builds from superseded package versions
        if older != out and older.is_dir():
            shutil.rmtree(older, ignore_errors=True)
    return userland


def _build(arch: ArchTarget, gen: Generation, debs: dict[str, Path], kernel_package: str, out: Path,
           log: Log) -> Userland:
    pkgroot = out / "pkgroot"
    for deb in debs.values():
        extract(deb, pkgroot)
    root = out / "root"
    root.mkdir(parents=True)

    def copy(rel_src: str, rel_dst: str | None = None, mode: int | None = None) -> Path:
        src = find_file(pkgroot, rel_src)
        dst = root / (rel_dst or rel_src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, mode if mode is not None else (0o755 if os.access(src, os.X_OK) else 0o644))
        return dst

    programs = [copy(p) for p in PROGRAMS + (KEXEC_TOOLS_PROGRAMS if has_kexec_tools(arch) else ())]
    programs.append(copy(f"usr/bin/python{gen.python}"))
    (root / "usr/bin/python3").symlink_to(f"python{gen.python}")
    stdlib = root / f"usr/lib/python{gen.python}"
    shutil.copytree(pkgroot / f"usr/lib/python{gen.python}", stdlib, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "config-*", "_test*.so", "xxlimited*.so"))
    for name in STDLIB_PRUNE:
        target = stdlib / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    programs += sorted((stdlib / "lib-dynload").glob("*.so"))

    libraries, interps = resolve_libraries(pkgroot, arch.triplet, programs, WHEEL_SONAMES)
    for soname, real in libraries.items():
        copy(str(real.relative_to(pkgroot)), f"lib/{arch.triplet}/{soname}")
    for interp in interps:
        copy(interp.lstrip("/"))

    release = _kernel_release(pkgroot, kernel_package, arch.image_prefix)
    kernel = out / "vmlinuz"
    shutil.copyfile(pkgroot / f"boot/{arch.image_prefix}{release}", kernel)
    moddirs = [pkgroot / d / release for d in ("lib/modules", "usr/lib/modules") if (pkgroot / d / release / "kernel").is_dir()]
    if not moddirs:
        raise LabError(f"{kernel_package} has no lib/modules/{release} (nor under usr/)")
    index = ModuleIndex.read(moddirs[0])
    order = index.load_order(arch.virtio_modules)
    moddir = root / f"lib/modules/{release}"
    moddir.mkdir(parents=True)
    for name in order:
        (moddir / f"{name}.ko").write_bytes(index.module_bytes(name))
    (root / "lab").mkdir()
    (root / "lab/modules").write_text("".join(f"/lib/modules/{release}/{n}.ko\n" for n in order))

    log(f"byte-compiling the guest's Python {gen.python} stdlib with the guest's own Python")
    # Sourceless (-b: x.pyc beside x.py, then x.py removed): the capture kernel has ~130 MiB
    # of RAM and the initramfs lives in it; a TCG guest must not compile on import either.
    # Sequential: compileall -j needs multiprocessing's semaphores, which a foreign guest's
    # Python under qemu-user (or without /dev/shm) may not have.
    run_guest_python(arch, root, gen.python, ["-m", "compileall", "-q", "-b", "--invalidation-mode",
                                              "unchecked-hash", "-d", f"/usr/lib/python{gen.python}", str(stdlib)])
    for source in stdlib.rglob("*.py"):
        if source.with_suffix(".pyc").exists():
            source.unlink()
    shutil.rmtree(pkgroot)
    userland = Userland(root=root, kernel=kernel, release=release, kernel_package=kernel_package,
                        modules=order, python=gen.python, arch=arch.name, generation=gen.name)
    userland.save(out / "manifest.json")
    return userland


def find_file(pkgroot: Path, rel: str) -> Path:
    """rel in the extracted packages, at its path or its merged-/usr path, symlinks followed in-root."""
    rel = rel.lstrip("/")
    candidates = [rel] if rel.startswith("usr/") else [rel, f"usr/{rel}"]
    if rel.startswith("usr/"):
        candidates.append(rel.removeprefix("usr/"))
    for candidate in candidates:
        path = pkgroot / candidate
        if path.exists() or path.is_symlink():
            resolved = resolve_in_root(pkgroot, path)
            if resolved.is_file():
                return resolved
    raise LabError(f"{rel} is missing from the extracted packages in {pkgroot}")


def _kernel_release(pkgroot: Path, kernel_package: str, prefix: str = "vmlinuz-") -> str:
    release = kernel_package.removeprefix("linux-image-").removesuffix("-unsigned")
    if (pkgroot / f"boot/{prefix}{release}").exists():
        return release
    found = sorted(p.name.removeprefix(prefix) for p in (pkgroot / "boot").glob(f"{prefix}*"))
    if len(found) != 1:
        raise LabError(f"{kernel_package} has {len(found)} kernels in /boot, expected one")
    return found[0]
