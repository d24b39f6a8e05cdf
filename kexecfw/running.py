"""What the running kernel says about itself through the sysroot, the same on every architecture:
its VMCOREINFO (the note in proc/kcore) and a symbol's address in proc/kallsyms.

Plugins use these to derive the facts a crash dump header needs (kernel text, linear map).
"""
from __future__ import annotations

import os
import re

from kexecfw.elfnotes import VMCOREINFO_NOTE_NAME, ElfCoreHeader, read_kcore_notes
from kexecfw.errors import BadInputError
from kexecfw.sysroot import Sysroot
from kexecfw.vmcoreinfo import VmcoreInfo

KALLSYMS_CHUNK = 1 << 16


def read_kcore(sysroot: Sysroot) -> tuple[ElfCoreHeader, VmcoreInfo | None]:
    """proc/kcore's ELF header (its program headers map the kernel's regions) and the running kernel's
    VMCOREINFO note, None when it has none (a truncated copy of kcore is enough)."""
    header, notes = read_kcore_notes(sysroot)
    info = next((VmcoreInfo.parse(n.desc) for n in notes if n.name == VMCOREINFO_NOTE_NAME), None)
    return header, info


def read_vmcoreinfo(sysroot: Sysroot) -> VmcoreInfo:
    """VMCOREINFO of the running kernel, from the note in proc/kcore."""
    _, info = read_kcore(sysroot)
    if info is None:
        raise BadInputError(f"{sysroot.file('proc/kcore')} has no VMCOREINFO note; a kernel without "
                            "CONFIG_CRASH_CORE cannot be dumped")
    return info


def kallsyms_symbol(sysroot: Sysroot, name: str) -> int | None:
    """Address of a symbol in proc/kallsyms, or None (absent file, symbol, or all-zero addresses).

    Read in chunks up to the symbol's line, searched as bytes: a live /proc/kallsyms has some 150k
    lines the kernel formats on each read (its kernel-text symbols come first), and splitting them
    all into Python strings took seconds of a load in a TCG guest.
    """
    path = sysroot.file("proc/kallsyms")
    if not os.path.isfile(path):
        return None
    # "ADDRESS TYPE NAME" or "ADDRESS TYPE NAME\t[MODULE]", one per line
    line = re.compile(rb"^([0-9a-fA-F]+)[ \t]+\S+[ \t]+" + re.escape(name.encode()) + rb"(?=\s|$)", re.M)
    needle = name.encode()      # a plain substring search first: most chunks do not have it at all
    try:
        with open(path, "rb") as f:
            rest = b""
            while True:
                chunk = f.read(KALLSYMS_CHUNK)
                # whole lines only; the last, partial one waits for the next chunk
                lines, _, rest = (rest + chunk).rpartition(b"\n") if chunk else (rest, b"", b"")
                found = line.search(lines) if needle in lines else None
                if found:
                    return int(found.group(1), 16) or None
                if not chunk:
                    return None
    except PermissionError:
        raise BadInputError(f"cannot read {path}: permission denied (run as root)") from None
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror}") from None
