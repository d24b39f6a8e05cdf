"""The initramfs cpio writer, read back by GNU cpio (the format the kernel unpacks)."""
from __future__ import annotations

import gzip
import io
import subprocess
from pathlib import Path

import pytest

from kexecfw.lab.cpio import CpioWriter, align4
from kexecfw.lab.initramfs import concatenate, write_tree
from tests.conftest import oracle



@pytest.fixture(autouse=True)
def gnu_cpio() -> str:
    """GNU cpio, the oracle every test here reads the archives back with."""
    return oracle("cpio", "cpio")


def _archive(build) -> bytes:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    build(w)
    w.close()
    return buf.getvalue()


def _cpio(args: list[str], data: bytes, cwd: Path | None = None) -> str:
    proc = subprocess.run(["cpio", *args], input=data, capture_output=True, cwd=cwd, check=True)
    return proc.stdout.decode()


def test_entries_read_back_with_cpio(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 7 + b"odd"  # a length that needs padding

    def build(w: CpioWriter) -> None:
        w.directory("bin")
        w.file("bin/tool", payload, 0o755)
        w.symlink("bin/sh", "tool")
        w.directory("dev")
        w.char_device("dev/console", 5, 1)
        w.file("empty", b"")

    data = _archive(build)
    assert len(data) % 4 == 0
    listing = _cpio(["-t", "--quiet"], data).split()
    assert listing == ["bin", "bin/tool", "bin/sh", "dev", "dev/console", "empty"]
    verbose = _cpio(["-tv", "--quiet"], data)
    console_line = next(ln for ln in verbose.splitlines() if ln.endswith("dev/console"))
    assert console_line.startswith("crw-------") and "5," in console_line and "1" in console_line
    # Extract (without device nodes: those need no root but we do not want them in tmp).
    _cpio(["-id", "--quiet", "--no-absolute-filenames", "bin/*", "empty"], data, cwd=tmp_path)
    assert (tmp_path / "bin/tool").read_bytes() == payload
    assert (tmp_path / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin/sh").is_symlink() and (tmp_path / "bin/sh").readlink() == Path("tool")
    assert (tmp_path / "empty").read_bytes() == b""


def test_write_tree_keeps_files_symlinks_and_modes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "usr/lib").mkdir(parents=True)
    (src / "usr/lib/libx.so.1.2").write_bytes(b"\x7fELF" + b"x" * 99)
    (src / "usr/lib/libx.so.1").symlink_to("libx.so.1.2")
    (src / "usr/bin").mkdir()
    (src / "usr/bin/run").write_text("#!/bin/sh\n")
    (src / "usr/bin/run").chmod(0o750)
    (src / "linkdir").symlink_to("usr/lib")
    data = _archive(lambda w: write_tree(w, src, "root"))
    out = tmp_path / "out"
    out.mkdir()
    _cpio(["-id", "--quiet"], data, cwd=out)
    assert (out / "root/usr/lib/libx.so.1.2").read_bytes() == (src / "usr/lib/libx.so.1.2").read_bytes()
    assert (out / "root/usr/lib/libx.so.1").readlink() == Path("libx.so.1.2")
    assert (out / "root/linkdir").readlink() == Path("usr/lib")
    assert (out / "root/usr/bin/run").stat().st_mode & 0o777 == 0o750


def test_uncompressed_archive_after_gzip_starts_aligned(tmp_path: Path) -> None:
    """A gzip member of odd length followed by a plain cpio: the second must start 4-byte aligned."""
    first = tmp_path / "a.cpio.gz"
    first.write_bytes(gzip.compress(_archive(lambda w: w.file("a", b"first")), mtime=0))
    second = tmp_path / "b.cpio"
    second.write_bytes(_archive(lambda w: w.file("b", b"second")))
    for pad in range(4):  # make the gzip member's length hit every residue mod 4
        first.write_bytes(first.read_bytes() + b"\0" * (1 if pad else 0))
        buf = io.BytesIO()
        total = concatenate([first, second], buf)
        blob = buf.getvalue()
        assert total == len(blob)
        start = blob.index(b"070701", len(first.read_bytes()))
        assert start % 4 == 0
        assert start - len(first.read_bytes()) == align4(len(first.read_bytes()))
        assert _cpio(["-t", "--quiet"], blob[start:]).split() == ["b"]
