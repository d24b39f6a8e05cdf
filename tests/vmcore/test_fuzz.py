"""Hypothesis: corrupt and truncated dumps give a clear KexecfwError, never another exception or a hang.

Inputs are the fixtures' real vmcores (and kdump files we write from them) with bytes
replaced or cut off where the parsers look: ELF header and program headers, notes,
VMCOREINFO text, the printk ring buffer's pages, the kdump header, sub header and bitmaps.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kexecfw.errors import KexecfwError
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcore.prstatus import parse_prstatus
from kexecfw.vmcore.writer import DumpWriter
from kexecfw.vmcoreinfo import VmcoreInfo

FUZZ = settings(max_examples=int(os.environ.get("KEXECFW_FUZZ_EXAMPLES", "120")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
edits = st.lists(st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(0, 255)), max_size=24)


def exercise(path: str) -> None:
    """Everything a user can ask of a dump: open, info, notes, dmesg."""
    try:
        with open_dump(path) as dump:
            dump.vmcoreinfo.typed()
            for i, n in enumerate(dump.prstatus_notes()):
                parse_prstatus(n, i, [f"r{j}" for j in range(27)])
            mem = KernelMemory(dump)
            mem.utsname()
            dmesg_bytes(mem)
    except KexecfwError as e:
        assert e.message and "\n" not in e.message


def mutate(data: bytes, changes, region: tuple[int, int]) -> bytes:
    out = bytearray(data)
    lo, hi = region
    for off, val in changes:
        out[lo + off % max(hi - lo, 1)] = val
    return bytes(out)


@pytest.fixture(scope="module")
def x86(mini_vmcores):
    return mini_vmcores["x86_64"].read_bytes()


@pytest.fixture(scope="module")
def kdump_bytes(mini_vmcores, tmp_path_factory):
    out = tmp_path_factory.mktemp("k") / "d.kdump"
    with open_dump(str(mini_vmcores["arm64"])) as dump:
        DumpWriter(dump, 31, "zlib").write(str(out))
    return out.read_bytes()


def _write(tmp_path_factory, data: bytes) -> str:
    d = tmp_path_factory.mktemp("f")
    p = d / "dump"
    p.write_bytes(data)
    return str(p)


@FUZZ
@given(changes=edits, cut=st.integers(0, 0x5000))
def test_elf_header_and_notes(x86, tmp_path_factory, changes, cut):
    data = mutate(x86, changes, (0, 0x3000))          # ELF header, phdrs, notes, VMCOREINFO
    if cut:
        data = data[:cut]
    exercise(_write(tmp_path_factory, data))


@FUZZ
@given(changes=edits)
def test_printk_ring_buffer_pages(x86, tmp_path_factory, changes):
    # the 0x71000-byte PT_LOAD at file offset 0xa000 holds the descriptors, infos and text ring
    data = mutate(x86, changes, (0xA000, 0x7B000))
    exercise(_write(tmp_path_factory, data))


@FUZZ
@given(changes=edits, cut=st.integers(0, 0x40000))
def test_kdump_headers_and_bitmaps(kdump_bytes, tmp_path_factory, changes, cut):
    data = mutate(kdump_bytes, changes, (0, 0x3000 + 2 * 0x18000))
    if cut:
        data = data[:cut]
    exercise(_write(tmp_path_factory, data))


@FUZZ
@given(changes=edits)
def test_kdump_page_data(kdump_bytes, tmp_path_factory, changes):
    data = mutate(kdump_bytes, changes, (0x33000, len(kdump_bytes)))
    exercise(_write(tmp_path_factory, data))


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_vmcoreinfo_parser_total(text):
    info = VmcoreInfo.parse(text)
    for key, value in info.typed().items():
        assert isinstance(value, (int, str))
        assert info.get_int(key) is None or isinstance(info.get_int(key), int)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_prstatus_any_bytes(blob):
    from kexecfw.elfnotes import Note
    try:
        st_ = parse_prstatus(Note(b"CORE", 1, blob, 0), 0, [f"r{j}" for j in range(34)])
        assert len(st_.registers) == 34
    except KexecfwError:
        pass


def test_empty_and_tiny_files(tmp_path):
    for data in (b"", b"\x7fELF", b"KDUMP   ", b"makedumpfile\0\0\0\0", b"\x7fELF\x02\x01" + bytes(58)):
        p = tmp_path / "d"
        p.write_bytes(data)
        exercise(str(p))
    os.remove(tmp_path / "d")


@pytest.fixture(scope="module")
def flat_bytes(kdump_bytes, tmp_path_factory):
    from kexecfw.vmcore.writer import flatten
    d = tmp_path_factory.mktemp("flat")
    (d / "k").write_bytes(kdump_bytes)
    fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    flatten(str(d / "k"), fd)
    os.close(fd)
    return (d / "f").read_bytes()


@FUZZ
@given(changes=edits, cut=st.integers(0, 0x50000))
def test_flattened_stream(flat_bytes, tmp_path_factory, changes, cut):
    data = mutate(flat_bytes, changes, (0x1000, 0x1000 + 64))     # the first record headers
    if cut:
        data = data[:cut]
    exercise(_write(tmp_path_factory, data))
