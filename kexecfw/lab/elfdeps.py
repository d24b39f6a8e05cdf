"""Which shared libraries a set of guest binaries needs (ELF DT_NEEDED, transitively).

The guest initramfs carries only the libraries its programs load, found in the
extracted Debian packages the way the guest's ld.so would find them.
"""
from __future__ import annotations

from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from kexecfw.lab.errors import LabError


def elf_needed_and_interp(path: Path) -> tuple[list[str], str | None]:
    """DT_NEEDED sonames and PT_INTERP of an ELF file ([] / None for a static or non-ELF file)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return [], None
            f.seek(0)
            elf = ELFFile(f)
            needed: list[str] = []
            interp = None
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = seg.get_interp_name()
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    needed += [t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
            return needed, interp
    except (ELFError, OSError) as e:
        raise LabError(f"cannot read ELF file {path}: {e}") from None


def resolve_in_root(root: Path, path: Path) -> Path:
    """Follow symlinks as the guest would: absolute targets are relative to root, not the host."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = Path(path.readlink())
        path = root / str(target).lstrip("/") if target.is_absolute() else path.parent / target
    raise LabError(f"symlink loop at {path}")


def library_dirs(root: Path, triplet: str) -> list[Path]:
    return [root / d for d in (f"lib/{triplet}", f"usr/lib/{triplet}", "lib", "usr/lib")]


def resolve_libraries(root: Path, triplet: str, programs: list[Path],
                      extra_sonames: tuple[str, ...] = ()) -> tuple[dict[str, Path], set[str]]:
    """Map each soname the programs need (transitively), and extra_sonames, to its file under root.

    Returns (soname -> real file, set of PT_INTERP paths). A soname that no
    extracted package provides is an error naming the program that wants it.
    """
    dirs = library_dirs(root, triplet)
    found: dict[str, Path] = {}
    interps: set[str] = set()
    todo = [(p, p) for p in programs]
    for soname in extra_sonames:
        for d in dirs:
            if (d / soname).exists() or (d / soname).is_symlink():
                found[soname] = resolve_in_root(root, d / soname)
                todo.append((found[soname], found[soname]))
                break
    while todo:
        path, wanted_by = todo.pop()
        needed, interp = elf_needed_and_interp(path)
        if interp:
            interps.add(interp)
        for soname in needed:
            if soname in found:
                continue
            for d in dirs:
                candidate = d / soname
                if candidate.exists() or candidate.is_symlink():
                    found[soname] = resolve_in_root(root, candidate)
                    todo.append((found[soname], wanted_by))
                    break
            else:
                raise LabError(f"{wanted_by.name} needs {soname}, which no downloaded package provides")
    return found, interps
