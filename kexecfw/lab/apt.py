"""Debian packages for a guest, through a private apt configuration.

The host stays as it is: each (suites, architecture) pair gets its own sources
file, lists directory, package cache and an empty dpkg status under the lab
cache, and apt-get/apt-cache run with ``-o Dir::...`` options pointing there.
So an amd64 Debian 12 host can fetch arm64 packages, or Debian 13's, without
``dpkg --add-architecture`` and without touching /etc/apt.
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from kexecfw.lab.errors import LabError
from kexecfw.lab.targets import SECURITY_SUITE_SUFFIX, ArchTarget, Generation

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE = 24 * 3600  # refresh package lists once a day; retried on a 404 anyway


def host_mirror() -> str:
    """The Debian mirror the host uses (deb822 or one-line sources), else deb.debian.org."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+/debian)/?\s", text + "\n"):
            return match.group(1)
    return DEFAULT_MIRROR


class AptRoot:
    """A private apt state for one set of suites and one Debian architecture."""

    def __init__(self, base: Path, suites: tuple[str, ...], security_suite: str | None, deb_arch: str,
                 mirror: str | None = None) -> None:
        self.deb_arch = deb_arch
        self.root = base / "apt" / f"{suites[0]}-{deb_arch}"
        self.archives = self.root / "cache" / "archives"
        self.lists = self.root / "lists"
        for d in [self.lists / "partial", self.archives / "partial", self.root / "sources.list.d",
                  self.root / "preferences.d"]:
            d.mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        mirror = mirror or host_mirror()
        opts = f"[arch={deb_arch} signed-by={KEYRING}]"
        lines = [f"deb {opts} {mirror} {suite} main" for suite in suites]
        if security_suite:
            lines.append(f"deb {opts} {DEFAULT_SECURITY_MIRROR} {security_suite} main")
        self.source_lines = tuple(lines)   # also what a bootstrapped full-OS guest gets (kexecfw.lab.fullos)
        sources = self.root / "sources.list"
        text = "\n".join(lines) + "\n"
        if not sources.exists() or sources.read_text() != text:
            sources.write_text(text)
            (self.lists / ".updated").unlink(missing_ok=True)

    @classmethod
    def for_guest(cls, cache: Path, arch: ArchTarget, gen: Generation) -> AptRoot:
        """The apt root a lab guest of this architecture and kernel generation gets its packages from."""
        return cls(cache, gen.suites, gen.suites[0] + SECURITY_SUITE_SUFFIX, arch.deb_arch)

    def _options(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={r / 'sources.list.d'}",
            "-o", f"Dir::Etc::PreferencesParts={r / 'preferences.d'}",
            "-o", f"Dir::Etc::Preferences={r / 'preferences'}",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::State::status={r / 'status'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", f"APT::Architecture={self.deb_arch}",
            "-o", f"APT::Architectures={self.deb_arch}",
            "-o", "APT::Get::AllowUnauthenticated=false",
            "-o", "Acquire::Retries=3",
        ]

    def _run(self, tool: str, *args: str, cwd: Path | None = None, timeout: int = 900) -> str:
        return self._call(tool, *args, cwd=cwd, timeout=timeout).stdout

    def _call(self, tool: str, *args: str, cwd: Path | None = None,
              timeout: int = 900) -> subprocess.CompletedProcess[str]:
        cmd = [tool, *self._options(), *args]
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise LabError(f"{tool} not found: the lab needs a Debian (apt-based) host") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"{tool} {' '.join(args[:2])} took over {timeout} s: check the network to the Debian mirror") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise LabError(f"{tool} {' '.join(args[:3])} failed: {last}")
        return proc

    def update(self, force: bool = False) -> None:
        stamp = self.lists / ".updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE:
            return
        proc = self._call("apt-get", "-q", "update")
        # apt-get update exits 0 when the mirror cannot be reached and keeps the lists it had: those of
        # the last update serve (the stamp is left stale, so the next call tries again); with none, fail.
        failed = [line for line in proc.stderr.splitlines() if line.startswith("W: Failed to fetch")]
        if failed:
            if not stamp.exists():
                raise LabError(f"apt-get update got no package lists for {self.root.name}: {failed[0][3:]}")
            return
        stamp.touch()

    def depends(self, packages: list[str]) -> dict[str, list[str]]:
        """Direct Depends of each package's candidate version (every alternative, no virtuals)."""
        out = self._run("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                        "--no-breaks", "--no-replaces", "--no-enhances", *packages)
        deps: dict[str, list[str]] = {}
        current: list[str] = []
        for line in out.splitlines():
            if line and not line.startswith(" "):
                current = deps.setdefault(line.strip().split(":")[0], [])
                continue
            m = re.match(r"\s+\|?(?:Pre)?Depends: (\S+)", line)
            if m and not m.group(1).startswith("<"):
                current.append(m.group(1).split(":")[0])
        return deps

    def resolve_kernel_package(self, metapackage: str) -> str:
        """The ABI package a kernel metapackage points at (linux-image-6.1.0-NN-arm64)."""
        self.update()
        for dep in self.depends([metapackage]).get(metapackage, []):
            if re.match(r"linux-image-\d", dep):
                return dep
        raise LabError(f"{metapackage} depends on no linux-image-<version> package in {self.root.name}")

    def library_closure(self, packages: list[str]) -> list[str]:
        """The packages plus every shared-library package (lib*) they depend on, recursively.

        Non-library dependencies (libfoo and zlib1g are libraries; dpkg, debconf, perl-base ...) are left out: the
        guest needs files, not a working package manager.
        """
        self.update()
        seen: set[str] = set(packages)
        level = list(packages)
        while level:  # one apt-cache call per level of the dependency tree
            found = self.depends(level)
            level = sorted({dep for deps in found.values() for dep in deps
                            if dep.startswith(("lib", "zlib")) and not dep.endswith(("-dev", "-doc")) and dep not in seen})
            seen.update(level)
        return sorted(seen)

    def download(self, packages: list[str]) -> dict[str, Path]:
        """apt-get download each package (cached); returns name -> .deb path."""
        self.update()
        found = self._cached(packages)
        missing = [p for p in packages if p not in found]
        if missing:
            try:
                self._run("apt-get", "-q", "download", *missing, cwd=self.archives)
            except LabError:
                self.update(force=True)  # stale lists point at files the mirror no longer has
                self._run("apt-get", "-q", "download", *missing, cwd=self.archives)
            found = self._cached(packages)
        still = [p for p in packages if p not in found]
        if still:
            raise LabError(f"apt-get download did not produce {', '.join(still)} for {self.deb_arch}")
        return found

    def downloaded(self, package_glob: str) -> list[Path]:
        """.debs of this architecture already in the package cache, oldest first: no lists or network needed."""
        return sorted(self.archives.glob(f"{package_glob}_*_{self.deb_arch}.deb"), key=lambda p: p.stat().st_mtime)

    def _cached(self, packages: list[str]) -> dict[str, Path]:
        """Cached .debs whose version is the current candidate."""
        versions = self.candidate_versions(packages)
        found = {}
        for name, version in versions.items():
            quoted = version.replace(":", "%3a")
            for arch in (self.deb_arch, "all"):
                deb = self.archives / f"{name}_{quoted}_{arch}.deb"
                if deb.exists():
                    found[name] = deb
        return found

    def candidate_versions(self, packages: list[str]) -> dict[str, str]:
        out = self._run("apt-cache", "policy", *packages)
        versions: dict[str, str] = {}
        current = None
        for line in out.splitlines():
            if line and not line.startswith(" ") and line.endswith(":"):
                current = line[:-1].split(":")[0]
            elif current and line.strip().startswith("Candidate:"):
                version = line.split(":", 1)[1].strip()
                if version != "(none)":
                    versions[current] = version
        return versions


def extract(deb: Path, dest: Path) -> None:
    """dpkg -x a package into dest (idempotent per package through a stamp file)."""
    stamp = dest / ".lab-extracted" / deb.name
    if stamp.exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()[-200:]}")
    stamp.parent.mkdir(exist_ok=True)
    stamp.touch()
