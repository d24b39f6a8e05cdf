"""A writer for the kernel's initramfs format: cpio "newc" (SVR4 without CRC).

Written in Python so the lab needs no root (device nodes, ownership) and builds
the same archive byte for byte on every host. Entries are written in the order
given; parents must come before their children.
"""
from __future__ import annotations

import stat
from typing import BinaryIO

TRAILER = "TRAILER!!!"


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


class CpioWriter:
    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self.out = out
        self.mtime = mtime
        self._ino = 721  # any start; the kernel uses ino only to pair hard links
        self._closed = False

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        name = name.lstrip("/") or "."
        encoded = name.encode() + b"\0"
        self._ino += 1
        fields = [self._ino, mode, 0, 0, nlink, self.mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + encoded + b"\0" * _pad4(len(header) + len(encoded)))
        self.out.write(data + b"\0" * _pad4(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer; the archive is complete after this."""
        if not self._closed:
            self._entry(TRAILER, 0, nlink=1)
            self._closed = True


def align4(length: int) -> int:
    """Padding that makes an archive appended after ``length`` bytes start 4-byte aligned.

    The kernel reads concatenated archives and rejects an uncompressed one that
    does not start on a 4-byte boundary ("invalid magic at start of compressed archive").
    """
    return _pad4(length)
