"""The capture side: read crash dumps (ELF, kdump-compressed, flattened), their notes and log, save them.

``open_dump(path)`` recognises the format by its magic and returns a
:class:`~kexecfw.vmcore.dumpfile.DumpFile`; :class:`~kexecfw.vmcore.kmem.KernelMemory`
reads the crashed kernel's memory by virtual address on top of it.
Modules import only what they need so that ``kexecfw vmcore dmesg`` stays fast.
"""
from __future__ import annotations

import os

from kexecfw.errors import BadInputError

ELF_MAGIC = b"\x7fELF"
KDUMP_MAGIC = b"KDUMP   "
DISKDUMP_MAGIC = b"DISKDUMP"
FLAT_MAGIC = b"makedumpfile\0\0\0\0"


def open_dump(path):
    """Open ``path`` as a crash dump of any supported format.

    ``path`` may also be a list: one file, or every file of a ``makedumpfile --split`` set.
    """
    if isinstance(path, (list, tuple)):
        if len(path) == 1:
            path = path[0]
        elif not path:
            raise BadInputError("no dump file given")
        else:
            from kexecfw.vmcore.kdumpfile import KdumpSet
            for p in path:
                with open_dump(p) as d:
                    if d.format not in ("kdump", "flattened-kdump"):
                        raise BadInputError(f"{p} is {d.format}: only the files of a makedumpfile --split "
                                            "set can be read together")
            return KdumpSet(list(path))
    try:
        with open(path, "rb") as f:
            magic = f.read(16)
    except IsADirectoryError:
        raise BadInputError(f"{path} is a directory, not a crash dump") from None
    except FileNotFoundError:
        if path == "/proc/vmcore":
            raise BadInputError("there is no /proc/vmcore: this is not a capture (kdump) kernel; "
                                "give a dump FILE") from None
        raise BadInputError(f"cannot read {path}: no such file") from None
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror}") from None
    if magic[:4] == ELF_MAGIC:
        from kexecfw.vmcore.elfdump import ElfDump
        return ElfDump(path)
    if magic[:8] in (KDUMP_MAGIC, DISKDUMP_MAGIC) or magic[:16] == FLAT_MAGIC:
        from kexecfw.vmcore.kdumpfile import KdumpFile
        return KdumpFile(path)
    if not magic:
        raise BadInputError(f"{path} is empty: not a crash dump")
    raise BadInputError(f"{path} is not a crash dump kexecfw knows (ELF, kdump-compressed or "
                        f"flattened): it starts with {magic[:8]!r}")


def default_dump_path() -> str:
    return os.environ.get("KEXECFW_VMCORE", "/proc/vmcore")
