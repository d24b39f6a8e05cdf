"""The flattened stream DumpWriter.write_flat sends into a pipe (what the ssh target and `vmcore save --flat -`
use, makedumpfile -F's format): never sought, its closing rewrites of bitmap and header are later records
for the same offsets. Reassembled by makedumpfile -R it is, byte for byte, the file DumpWriter.write makes
(the header's time aside); kexecfw reads it as it is; records apply in order where they overlap, in
makedumpfile -R and in kexecfw's reader alike; a reader gone mid-stream, or the byte limit, leaves a
stream that says incomplete."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import pytest

from conftest import ARCHES
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.kdumpfmt import FLAT_DATA_HEADER, FLAT_HEADER, FLAT_HEADER_SIZE, MAKEDUMPFILE_SIGNATURE
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcore.writer import DumpIncomplete, DumpWriter
from tests.conftest import REPO, oracle

TIMESTAMP = slice(408, 424)          # disk_dump_header's tv_sec and tv_usec: the time of writing


def _into_pipe(write, keep: int | None = None) -> tuple[bytes, object]:
    """Run ``write(fd)`` on a pipe's writing end; what came out of the pipe (only the first ``keep``
    bytes, the reader then closing its end), and what ``write`` returned or raised."""
    r, w = os.pipe()
    got = bytearray()

    def read() -> None:
        with os.fdopen(r, "rb", buffering=0) as f:
            while keep is None or len(got) < keep:
                piece = f.read(1 << 16)
                if not piece:
                    break
                got.extend(piece)
            del got[keep if keep is not None else len(got):]

    reader = threading.Thread(target=read)
    reader.start()
    try:
        result = write(w)
    except DumpIncomplete as e:
        result = e
    finally:
        os.close(w)
        reader.join()
    return bytes(got), result


def _rebuild(flat: bytes, tmp_path, name: str = "rebuilt.kdump") -> bytes:
    out = tmp_path / name
    subprocess.run([oracle("makedumpfile", "makedumpfile"), "-R", str(out)], input=flat, check=True,
                   capture_output=True)
    return out.read_bytes()


def _records(flat: bytes) -> list[tuple[int, int, int]]:
    """(position in the stream, offset, size) of each record."""
    out, pos = [], FLAT_HEADER_SIZE
    while True:
        offset, size = FLAT_DATA_HEADER.unpack_from(flat, pos)
        if offset == -1:
            return out
        out.append((pos, offset, size))
        pos += FLAT_DATA_HEADER.size + size


def _whole_stream(src) -> bytes:
    with open_dump(str(src)) as dump:
        return _into_pipe(lambda fd: DumpWriter(dump, 31, "zlib", threads=1).write_flat(fd, "the pipe"))[0]


def _mid_pages(flat: bytes) -> int:
    """A stream position halfway through the page records (after header, sub header and the two bitmaps,
    before the closing rewrites of 2nd bitmap and header)."""
    pages = _records(flat)[4:-2]
    return (pages[0][0] + pages[-1][0]) // 2


def _pages(path) -> dict[int, bytes]:
    with open_dump(str(path)) as dump:
        return {pfn: dump.read_page(pfn) for lo, hi in dump.iter_present_pfns() for pfn in range(lo, hi)}


def _readable_pages(path) -> tuple[dict[int, bytes], int]:
    """The pages of a dump cut short that can be read, and how many its bitmap claims that cannot."""
    from kexecfw.vmcore.dumpfile import MemoryLost
    pages, lost = {}, 0
    with open_dump(str(path)) as dump:
        for lo, hi in dump.iter_present_pfns():
            for pfn in range(lo, hi):
                try:
                    pages[pfn] = dump.read_page(pfn)
                except MemoryLost:
                    lost += 1
    return pages, lost


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("level", [1, 31])
def test_stream_is_the_file_save_once_reassembled(arch, level, mini_vmcores, expected_dmesg, tmp_path, monkeypatch):
    monkeypatch.setenv("KEXECFW_ZLIB_ENGINE", "stdlib")    # one engine: auto may choose differently twice
    src = str(mini_vmcores[arch])
    with open_dump(src) as dump:
        file_stats = DumpWriter(dump, level, "zlib", threads=2).write(str(tmp_path / "file.kdump"))
    with open_dump(src) as dump:
        flat, stats = _into_pipe(lambda fd: DumpWriter(dump, level, "zlib", threads=2).write_flat(fd, "the pipe"))
    assert stats["path"] == "the pipe" and stats["size"] == stats["flat_bytes"] == len(flat)
    assert stats["pages_written"] == file_stats["pages_written"] > 100 and "stream_cut" not in stats
    rebuilt = bytearray(_rebuild(flat, tmp_path))
    plain = bytearray((tmp_path / "file.kdump").read_bytes())
    rebuilt[TIMESTAMP] = plain[TIMESTAMP] = bytes(16)
    assert rebuilt == plain
    (tmp_path / "dump.flat").write_bytes(flat)
    with open_dump(str(tmp_path / "dump.flat")) as k:
        assert k.format == "flattened-kdump" and not k.incomplete
        assert dmesg_bytes(KernelMemory(k)) == expected_dmesg[arch]
    kept = _pages(tmp_path / "dump.flat")
    source = _pages(src)
    assert kept == _pages(tmp_path / "rebuilt.kdump") and all(source[pfn] == page for pfn, page in kept.items())


def test_records_apply_in_order_where_they_overlap(tmp_path):
    """Random records over one another: makedumpfile -R and kexecfw's reader both give what painting them
    in stream order gives (a later record wins over every byte it covers)."""
    rnd = random.Random(13)
    for trial in range(20):
        stream = bytearray(FLAT_HEADER.pack(MAKEDUMPFILE_SIGNATURE, 1, 1).ljust(FLAT_HEADER_SIZE, b"\0"))
        painted = bytearray()
        stream += FLAT_DATA_HEADER.pack(0, 8) + b"\x01" * 8      # starts at 0, as every dump does
        painted += b"\x01" * 8
        for _ in range(rnd.randint(2, 40)):
            offset, size = rnd.randint(0, 3000), rnd.randint(1, 700)
            data = rnd.randbytes(size)
            stream += FLAT_DATA_HEADER.pack(offset, size) + data
            painted.extend(bytes(max(0, offset + size - len(painted))))
            painted[offset:offset + size] = data
        stream += FLAT_DATA_HEADER.pack(-1, -1)
        assert _rebuild(bytes(stream), tmp_path, f"{trial}.bin") == painted, trial
        from kexecfw.vmcore.kdumpfile import _Flat
        path = tmp_path / f"{trial}.flat"
        path.write_bytes(stream)
        fd = os.open(path, os.O_RDONLY)
        try:
            flat = _Flat(fd, str(path))
            assert flat.size == len(painted) and flat.pread(len(painted), 0) == painted, trial
        finally:
            os.close(fd)


def test_an_empty_write_sends_no_record(tmp_path):
    """A real dump's writer has empty pieces (82 in a lab guest's ssh save): a record of size 0 makes
    makedumpfile -R refuse the whole stream ("Can't get valid end header of flattened format")."""
    from kexecfw.vmcore.writer import FlatStream

    def write(fd: int) -> None:
        out = FlatStream(fd)
        out.write(b"\x01" * 8, 0)
        out.write(b"", 4096)
        out.write(b"\x02" * 4, 8)
        out.end()
    stream, _ = _into_pipe(write)
    records = stream[FLAT_HEADER_SIZE:]
    assert records == (FLAT_DATA_HEADER.pack(0, 8) + b"\x01" * 8 + FLAT_DATA_HEADER.pack(8, 4) + b"\x02" * 4
                       + FLAT_DATA_HEADER.pack(-1, -1))
    assert _rebuild(stream, tmp_path, "empty.bin") == b"\x01" * 8 + b"\x02" * 4


@pytest.mark.parametrize("arch", ARCHES)
def test_a_reader_gone_mid_stream_leaves_it_incomplete(arch, mini_vmcores, tmp_path):
    cut_at = _mid_pages(_whole_stream(mini_vmcores[arch]))
    with open_dump(str(mini_vmcores[arch])) as dump:
        writer = DumpWriter(dump, 31, "zlib", threads=1)
        flat, error = _into_pipe(lambda fd: writer.write_flat(fd, "host:vmcore.flat.incomplete"), keep=cut_at)
    assert isinstance(error, DumpIncomplete) and error.exit_code == 6
    assert error.message.startswith("the stream was cut after ") and "(Broken pipe)" in error.message
    assert " pages and is marked incomplete" in error.message and ": host:vmcore.flat.incomplete was sent " \
        in error.message
    assert writer.stats["stream_cut"].startswith("the stream was cut after ") and len(flat) == cut_at
    (tmp_path / "cut.flat").write_bytes(flat)
    source = _pages(mini_vmcores[arch])
    with open_dump(str(tmp_path / "cut.flat")) as k:
        assert k.incomplete and "marked incomplete" in k.missing_memory()
    kept, lost = _readable_pages(tmp_path / "cut.flat")     # what arrived is readable, and right
    assert kept and lost and all(source[p] == v for p, v in kept.items())


def test_the_byte_limit_ends_a_whole_stream_marked_incomplete(mini_vmcores, tmp_path):
    """The room on the other side (the ssh host's free space above the floor) reached: the stream stops
    there, still closed by the rewrites and its end marker within the limit, and says incomplete."""
    whole = _whole_stream(mini_vmcores["x86_64"])
    closing = sum(FLAT_DATA_HEADER.size + size for _, _, size in _records(whole)[-2:]) + FLAT_DATA_HEADER.size
    limit = _mid_pages(whole) + closing
    with open_dump(str(mini_vmcores["x86_64"])) as dump:
        writer = DumpWriter(dump, 31, "zlib", threads=1, byte_limit=limit)
        flat, error = _into_pipe(lambda fd: writer.write_flat(fd, "the pipe"))
    assert isinstance(error, DumpIncomplete) and "reached the free space it may use" in error.message
    assert len(flat) <= limit and writer.stats["flat_bytes"] == len(flat)
    (tmp_path / "part.flat").write_bytes(flat)
    rebuilt = tmp_path / "rebuilt.kdump"
    rebuilt.write_bytes(_rebuild(flat, tmp_path, "r.kdump"))
    source = _pages(mini_vmcores["x86_64"])
    for path in (tmp_path / "part.flat", rebuilt):
        with open_dump(str(path)) as k:
            assert k.incomplete
        kept = _pages(path)
        assert 0 < len(kept) == writer.stats["pages_written"] < len(source)
        assert all(source[p] == v for p, v in kept.items())


def _vmcore_save(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", *args], stdout=stdout,
                          stderr=subprocess.PIPE, cwd=REPO, timeout=300)


def test_vmcore_save_flat_to_stdout(mini_vmcores, tmp_path):
    done = _vmcore_save("--flat", "-", "-i", str(mini_vmcores["x86_64"]), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(MAKEDUMPFILE_SIGNATURE) and b'"path": "stdout"' in done.stderr
    (tmp_path / "out.flat").write_bytes(done.stdout)
    source = _pages(mini_vmcores["x86_64"])
    kept = _pages(tmp_path / "out.flat")
    assert kept and all(source[p] == v for p, v in kept.items())
    # a stdout whose reader stops: exit 6 and one line, never a traceback
    cut = subprocess.run(f"{sys.executable} -m kexecfw vmcore save --flat - -i {mini_vmcores['x86_64']} | head -c 5000"
                         " >/dev/null; exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert cut.returncode == 6 and cut.stderr.count("\n") == 1 and "the stream was cut after" in cut.stderr
    for args, words in ((["-"], "add --flat"), (["--flat", str(tmp_path / "x")], "give - as OUT"),
                        (["--flat", "-", "--dir", str(tmp_path)], "give - as OUT"),
                        (["--flat", "--elf", "-"], "not an ELF one")):
        bad = _vmcore_save(*args, "-i", str(mini_vmcores["x86_64"]))
        assert bad.returncode == 3 and bad.stderr.count(b"\n") == 1 and words.encode() in bad.stderr, (args, bad)
        assert bad.stdout == b""
