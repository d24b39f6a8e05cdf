"""Full-OS guests: a Debian root file system image booted with systemd as PID 1 on its own disk.

The base image is built once per machine and kept under ``<lab cache>/fullos/<suite>-<debian arch>/<key>/``:
``root.img`` (a sparse raw ext4 image made by ``mkfs.ext4 -d`` from an mmdebstrap tree), the image's own
``vmlinuz`` and ``initrd.img`` (QEMU boots them with ``-kernel``/``-initrd``) and ``manifest.json``. The key
is the package list, the files baked in and :data:`RECIPE_VERSION`, not package versions: a point release
does not rebuild it, and neither does a change of kexecfw's Python requirements (the image's venv has those
of its build; each run's first boot pip-installs kexecfw with its current ones from the script disk, as
``pip install`` of the wheel fetches what is missing).

Packages come through the lab's private apt sources (:class:`kexecfw.lab.apt.AptRoot`: same mirror, same
package cache); the host's apt is not touched. The image has kexecfw's dependencies installed in a venv
under /opt/kexecfw the way a person would (``python3 -m venv``, ``pip install`` of wheels downloaded on
the host for the guest's Python) and the lab agent unit (guest/fullos-agent); kexecfw itself is
installed per run from this checkout (:mod:`kexecfw.lab.fullos_guest`), so a code change keeps the image.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kexecfw.lab.apt import KEYRING, AptRoot
from kexecfw.lab.cache import cache_dir
from kexecfw.lab.errors import LabError
from kexecfw.lab.hostprep import ensure_host_tools
from kexecfw.lab.targets import ArchTarget, Generation, arch_target, generation as lab_generation

RECIPE_VERSION = "1"   # bump when the image's layout or its customisation changes
IMAGE_MIB = 3072
VENV = "/opt/kexecfw"
AGENT_UNIT = "kexecfw-lab-agent.service"
AGENT_BOOT = "fullos-agent-boot"   # baked into the image; the agent proper comes on each boot's script disk
# What every full-OS guest has besides minbase and the kernel: systemd as init, an initramfs that finds
# /dev/vda, the venv's Python, the tools the kdump service scenario compares and inspects with.
BASE_PACKAGES = ("systemd-sysv", "udev", "kmod", "initramfs-tools", "python3", "python3-venv",
                 "makedumpfile", "openssh-client", "e2fsprogs", "iproute2", "procps")
BUILD_TIMEOUT = 3600
UNUSED_DAYS = 14   # images of other recipes not used for that long are deleted (each is ~0.5 GB)
Log = Callable[[str], None]


def guest_file(name: str) -> bytes:
    """A file of kexecfw/lab/guest/ (package data)."""
    return (importlib.resources.files("kexecfw.lab") / "guest" / name).read_bytes()


def kexecfw_requirements() -> tuple[str, ...]:
    """kexecfw's runtime requirements (no extras): the checkout's pyproject.toml, which the wheel the guest
    installs is built from (an editable install's metadata lags behind it until pip install -e runs again);
    the installed metadata when kexecfw does not run from a checkout."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        with open(pyproject, "rb") as f:
            return tuple(sorted(tomllib.load(f)["project"]["dependencies"]))
    try:
        requires = importlib.metadata.requires("kexecfw") or []
    except importlib.metadata.PackageNotFoundError:
        raise LabError("kexecfw's metadata is not installed: run setup.sh (pip install -e .)") from None
    return tuple(sorted(r for r in requires if "extra ==" not in r))


@dataclass(frozen=True)
class ImageRecipe:
    """What a full-OS image is made of. ``extra_packages`` is the hook for scenario needs
    (kdump-tools and kexec-tools for the comparison, openssh-server ...): another key, another image.
    They are installed once the base system and its kernel are configured (kdump-tools' kernel hook builds
    a MODULES=dep initrd, which only works on the running system: not during the bootstrap), after the
    ``debconf`` lines (``debconf-set-selections`` format, e.g.
    ``"kexec-tools kexec-tools/load_kexec boolean false"``) are set."""
    arch: str = "x86_64"
    generation: str = "6.1"
    extra_packages: tuple[str, ...] = ()
    debconf: tuple[str, ...] = ()
    size_mib: int = IMAGE_MIB
    requirements: tuple[str, ...] = field(default_factory=kexecfw_requirements)

    @property
    def target(self) -> ArchTarget:
        return arch_target(self.arch)

    @property
    def gen(self) -> Generation:
        return lab_generation(self.generation)

    def packages(self) -> tuple[str, ...]:
        """What mmdebstrap installs (extra_packages come after, see _customize_script)."""
        return tuple(sorted({*BASE_PACKAGES, self.target.kernel_metapackage}))

    def key(self) -> str:
        baked = hashlib.sha256(b"".join(guest_file(name) for name in (AGENT_BOOT, AGENT_UNIT))).hexdigest()
        # not the requirements: a new dependency of kexecfw is installed per run, not by a rebuild (30 min on arm64)
        data = {"recipe": RECIPE_VERSION, "arch": self.target.deb_arch, "suites": list(self.gen.suites),
                "packages": list(self.packages()), "size_mib": self.size_mib,
                **({"extra_packages": sorted(self.extra_packages)} if self.extra_packages else {}),
                "baked": baked}
        if self.debconf:
            data["debconf"] = list(self.debconf)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def directory(self, cache: Path) -> Path:
        return cache / "fullos" / f"{self.gen.suites[0]}-{self.target.deb_arch}" / self.key()


@dataclass
class BaseImage:
    root: Path          # raw ext4 image of the root file system (never written after the build)
    kernel: Path        # the image's /boot/vmlinuz-<release>
    initrd: Path        # the image's /boot/initrd.img-<release>
    release: str        # kernel release
    arch: str
    generation: str
    python: str         # the guest's python3 version, e.g. "3.11"
    packages: dict[str, str]   # every installed package -> version
    build_seconds: dict[str, float]

    @classmethod
    def load(cls, manifest: Path) -> BaseImage:
        data = json.loads(manifest.read_text())
        here = manifest.parent
        return cls(**{**data, "root": here / data["root"], "kernel": here / data["kernel"],
                      "initrd": here / data["initrd"]})

    def save(self, manifest: Path) -> None:
        data = {**self.__dict__, "root": self.root.name, "kernel": self.kernel.name, "initrd": self.initrd.name}
        manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def base_image(recipe: ImageRecipe | None = None, cache: Path | None = None, log: Log = print) -> BaseImage:
    """The recipe's image, built on first use (a few minutes) and then taken from the cache."""
    recipe = recipe or ImageRecipe()
    base = cache_dir(cache)
    out = recipe.directory(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.json"
    if manifest.exists():   # a finished image is never written again: no wait for another recipe's build
        os.utime(manifest)   # last use, for _prune_unused
        return BaseImage.load(manifest)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one build at a time per suite and architecture
        _prune_unused(out)
        if manifest.exists():
            os.utime(manifest)   # last use, for _prune_unused
            return BaseImage.load(manifest)
        ensure_host_tools(recipe.target, log, full_os=True)
        partial = out.with_name(f".partial-{out.name}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            image = _build(recipe, base, partial, log)
            image.save(partial / "manifest.json")
            partial.rename(out)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return BaseImage.load(manifest)


def _prune_unused(keep: Path) -> None:
    """Delete the images beside ``keep`` (other recipes, superseded ones) unused for UNUSED_DAYS."""
    limit = time.time() - UNUSED_DAYS * 86400
    for other in keep.parent.iterdir():
        manifest = other / "manifest.json"
        if other != keep and other.is_dir() and not other.name.startswith(".") and \
                (not manifest.exists() or manifest.stat().st_mtime < limit):
            shutil.rmtree(other, ignore_errors=True)


def guest_wheelhouse(target: ArchTarget, python: str, requirements: tuple[str, ...], cache: Path) -> Path:
    """Wheels of the requirements and their dependencies for the guest's Python and platform (pip download,
    cached per requirement list): the guest has no network."""
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    house = cache / "fullos" / "wheels" / f"{target.pip_platform}-py{python}-{key}"
    if (house / ".complete").exists():
        return house
    house.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--platform", target.pip_platform,
           "--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}",
           "-d", str(house), *requirements]
    _run(cmd, "pip download of kexecfw's dependencies for the guest", timeout=600)
    (house / ".complete").touch()
    return house


def _build(recipe: ImageRecipe, cache: Path, work: Path, log: Log) -> BaseImage:
    target, gen = recipe.target, recipe.gen
    apt = AptRoot.for_guest(cache, target, gen)
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    wheels = guest_wheelhouse(target, gen.python, recipe.requirements, cache)
    seconds["wheels"] = round(time.monotonic() - t0, 1)

    tree = work / "tree"
    customize = work / "customize.sh"
    customize.write_text(_customize_script(recipe, wheels))
    for name in (AGENT_BOOT, AGENT_UNIT):
        (work / name).write_bytes(guest_file(name))
    log(f"building the {target.name} full-OS image ({len(recipe.packages()) + len(recipe.extra_packages)} "
        "packages + minbase) with mmdebstrap")
    archives = apt.archives   # the lab's package cache: what the lab already fetched is not fetched again
    cmd = ["mmdebstrap", "--variant=minbase", f"--arch={target.deb_arch}", "--mode=root",
           f"--include={','.join(recipe.packages())}", f"--keyring={KEYRING}",
           "--aptopt=Acquire::Retries \"3\"", "--dpkgopt=path-exclude=/usr/share/doc/*",
           "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
           "--skip=download/empty", "--skip=essential/unlink",
           "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
           f"--setup-hook=sync-in {shlex.quote(str(archives))} /var/cache/apt/archives/",
           # initramfs builds are held back (diverted to no-ops) until everything is installed: one build, not three
           *(f"--essential-hook={_hold(tool)}" for tool in HELD_BACK),
           f"--customize-hook=sh {shlex.quote(str(customize))} \"$1\"",
           f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(archives))}",
           gen.suites[0], str(tree), *apt.source_lines]
    t0 = time.monotonic()
    _run(cmd, "mmdebstrap", timeout=BUILD_TIMEOUT, env={**os.environ, "TMPDIR": str(work)},
         log=cache / "fullos" / "mmdebstrap.log")
    seconds["mmdebstrap"] = round(time.monotonic() - t0, 1)

    boot = tree / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError(f"the image has {len(kernels)} kernels in /boot, expected one")
    release = kernels[0].name[len("vmlinuz-"):]
    initrd = boot / f"initrd.img-{release}"
    if not initrd.is_file():
        raise LabError(f"the image has no /boot/initrd.img-{release}: update-initramfs did not run")
    shutil.copy2(kernels[0], work / "vmlinuz")
    shutil.copy2(initrd, work / "initrd.img")
    packages = dict(line.split("\t", 1) for line in
                    _run(["chroot", str(tree), "dpkg-query", "-W", "-f", "${Package}\t${Version}\n"],
                         "dpkg-query in the image").splitlines() if "\t" in line)
    python = _run(["chroot", str(tree), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                  "the image's python3").strip()

    t0 = time.monotonic()
    image = work / "root.img"
    make_ext4(image, recipe.size_mib, tree, label="kexecfw-root")
    seconds["mkfs"] = round(time.monotonic() - t0, 1)
    shutil.rmtree(tree)
    log(f"full-OS image {recipe.key()}: {_du_mib(image)} MiB used of {recipe.size_mib} MiB, "
        f"mmdebstrap {seconds['mmdebstrap']} s, kernel {release}")
    return BaseImage(root=image, kernel=work / "vmlinuz", initrd=work / "initrd.img", release=release,
                     arch=target.name, generation=recipe.generation, python=python, packages=packages,
                     build_seconds=seconds)


# A no-op from after the essential packages until the customize step: the kernel's postinst and triggers would
# build the initrd several times (8 min each on arm64 under qemu-user).
HELD_BACK = ("/usr/sbin/update-initramfs",)


def _hold(path: str) -> str:
    return (f'chroot "$1" dpkg-divert --quiet --local --rename --add {path} && '
            f"printf '#!/bin/sh\\nexit 0\\n' > \"$1\"{path} && chmod 755 \"$1\"{path}")


def _customize_script(recipe: ImageRecipe, wheels: Path) -> str:
    """The shell run on the host with the tree as $1 once every package is in."""
    reqs = " ".join(shlex.quote(r) for r in recipe.requirements)
    here = '"$(dirname "$0")"'
    extra = ""
    if recipe.debconf:
        extra += (f"printf '%s\\n' {' '.join(shlex.quote(line) for line in recipe.debconf)} "
                  '| chroot "$root" debconf-set-selections\n')
    if recipe.extra_packages:
        extra += ('chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends '
                  f"{' '.join(shlex.quote(p) for p in sorted(recipe.extra_packages))}\n")
    return f"""set -eu
root="$1"
# the initramfs tools back, one initrd for the one kernel
for held in {" ".join(HELD_BACK)}; do
    rm -f "$root$held"
    chroot "$root" dpkg-divert --quiet --local --rename --remove "$held"
done
chroot "$root" update-initramfs -c -k all
# the recipe's debconf answers and extra packages, on a configured system with its kernel
{extra}
# kexecfw's venv, as a person makes it; kexecfw itself is installed per run
mkdir -p "$root/tmp/lab-wheels"
cp {shlex.quote(str(wheels))}/*.whl "$root/tmp/lab-wheels/"
chroot "$root" python3 -m venv {VENV}
chroot "$root" {VENV}/bin/pip install -q --no-index --find-links /tmp/lab-wheels {reqs}
rm -rf "$root/tmp/lab-wheels"
# the lab agent
install -m 755 {here}/{AGENT_BOOT} "$root/usr/local/sbin/kexecfw-lab-agent"
install -m 644 {here}/{AGENT_UNIT} "$root/etc/systemd/system/{AGENT_UNIT}"
chroot "$root" systemctl enable {AGENT_UNIT} systemd-networkd.service
# user-mode network by DHCP, the root file system, a name, a console login without password (lab only)
mkdir -p "$root/etc/systemd/network"
printf '[Match]\\nName=en*\\n\\n[Network]\\nDHCP=yes\\n' > "$root/etc/systemd/network/80-lab.network"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\\n' > "$root/etc/fstab"
echo kexecfw-guest > "$root/etc/hostname"
chroot "$root" passwd -dq root
rm -f "$root/etc/machine-id" && touch "$root/etc/machine-id"
"""


def make_ext4(image: Path, size_mib: int, tree: Path | None = None, label: str = "") -> Path:
    """A sparse raw image with an ext4 file system (with tree's contents when given)."""
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    cmd = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
    if label:
        cmd += ["-L", label]
    if tree is not None:
        cmd += ["-d", str(tree)]
    _run([*cmd, str(image)], f"mkfs.ext4 of {image.name}")
    return image


def _du_mib(path: Path) -> int:
    return os.stat(path).st_blocks * 512 >> 20


def _run(cmd: list[str], what: str, timeout: float = 600, env: dict[str, str] | None = None,
         log: Path | None = None) -> str:
    """Run a host command; its output is kept in ``log`` when given (mmdebstrap's is long)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} not found: run `python -m kexecfw lab prepare` or apt-get install it") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what} took over {timeout:.0f} s") from None
    if log is not None:
        log.write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "(no output)").splitlines()
        where = f" (whole output in {log})" if log else ""
        raise LabError(f"{what} failed (exit {proc.returncode}){where}: {lines[-1]}")
    return proc.stdout
