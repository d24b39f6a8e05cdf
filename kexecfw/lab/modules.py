"""Kernel modules a guest must insmod, in load order, from the modules' own modinfo.

busybox's insmod takes one file and no dependencies, so the lab resolves the
order itself: every dependency before the module that needs it, built-in
modules (modules.builtin) skipped. Debian's kernel packages ship no
modules.dep (depmod runs at install time), so dependencies come from each
module's ``.modinfo`` ``depends=`` entry; a modules.dep is used when present.
Works for .ko, .ko.xz and .ko.zst files.
"""
from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

from kexecfw.lab.errors import LabError

COMPRESSED_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str) -> str:
    """kernel/drivers/block/virtio_blk.ko.xz -> virtio_blk (dashes and underscores are one)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in COMPRESSED_SUFFIXES + (".ko",):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def modinfo(module: bytes) -> dict[str, list[str]]:
    """The key=value strings of a module's .modinfo section (keys may repeat)."""
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        section = ELFFile(io.BytesIO(module)).get_section_by_name(".modinfo")
    except ELFError as e:
        raise LabError(f"not a kernel module (bad ELF: {e})") from None
    info: dict[str, list[str]] = {}
    if section is None:
        return info
    for item in section.data().split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


@dataclass
class ModuleIndex:
    """The modules of one kernel release: where each is, what it needs, what is built in."""

    moddir: Path                     # lib/modules/<release>
    paths: dict[str, str]            # name -> path relative to moddir
    builtin: frozenset[str]
    deps: dict[str, list[str]]       # name -> direct dependencies (filled lazily from modinfo)

    @classmethod
    def read(cls, moddir: Path) -> ModuleIndex:
        kernel_dir = moddir / "kernel"
        if not kernel_dir.is_dir():
            raise LabError(f"{kernel_dir} is missing: is {moddir} a kernel package's module tree?")
        paths = {module_name(str(p)): str(p.relative_to(moddir))
                 for p in kernel_dir.rglob("*.ko*") if p.name.endswith((".ko",) + COMPRESSED_SUFFIXES)}
        builtin_file = moddir / "modules.builtin"
        builtin = frozenset(module_name(p) for p in builtin_file.read_text().split()) if builtin_file.exists() else frozenset()
        deps: dict[str, list[str]] = {}
        dep_file = moddir / "modules.dep"
        if dep_file.exists():
            for line in dep_file.read_text().splitlines():
                target, sep, rest = line.partition(":")
                if sep:
                    deps[module_name(target.strip())] = [module_name(p) for p in rest.split()]
        return cls(moddir, paths, builtin, deps)

    def dependencies(self, name: str) -> list[str]:
        if name not in self.deps:
            found = modinfo(self.module_bytes(name)).get("depends", [""])[0]
            self.deps[name] = [d.replace("-", "_") for d in found.split(",") if d]
        return self.deps[name]

    def load_order(self, wanted: list[str] | tuple[str, ...]) -> list[str]:
        """The modules to insmod for ``wanted``, dependencies first, built-ins left out."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            name = name.replace("-", "_")
            if name in order or name in self.builtin:
                return
            if name not in self.paths:
                raise LabError(f"module {name} is neither in {self.moddir}/modules.dep nor built in")
            if name in visiting:
                raise LabError(f"module dependency cycle through {name} in {self.moddir}/modules.dep")
            visiting.add(name)
            for dep in self.dependencies(name):
                visit(dep)
            visiting.discard(name)
            order.append(name)

        for name in wanted:
            visit(name)
        return order

    def module_bytes(self, name: str) -> bytes:
        """The module's ELF object, decompressed (busybox insmod wants a plain .ko)."""
        path = self.moddir / self.paths[name]
        data = path.read_bytes()
        if path.name.endswith(".ko.xz"):
            return lzma.decompress(data)
        if path.name.endswith(".ko.zst"):
            import zstandard
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
        if path.name.endswith(".ko.gz"):
            import gzip
            return gzip.decompress(data)
        return data
