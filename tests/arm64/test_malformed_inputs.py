"""Malformed kernels and device trees give one BadInputError, never another exception (hypothesis)."""
from __future__ import annotations

import gzip
import struct

from hypothesis import given, settings, strategies as st

from kexecfw.errors import BadInputError
from kexecfw.memory.devicetree import DeviceTree
from kexecfw.plugins.arm64.image import unwrap
from tests.conftest import fixture_path

PREFIXES = [b"", b"\x1f\x8b", b"\x7fELF\x02\x01\x01", b"MZ\x00\x00zimg", b"\xd0\x0d\xfe\xed"]


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=512))
def test_unwrap_random_files(prefix: bytes, body: bytes) -> None:
    try:
        unwrap(prefix + body, "kernel")
    except BadInputError:
        pass


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=256))
def test_unwrap_gzip_of_garbage(body: bytes) -> None:
    try:
        assert unwrap(gzip.compress(body), "kernel.gz") is None
    except BadInputError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_real_device_tree(data: st.DataObject) -> None:
    blob = bytearray(fixture_path("arm64", "sysroot", "sys", "firmware", "fdt").read_bytes()[:0x2000])
    struct.pack_into(">I", blob, 4, len(blob))           # totalsize: the cut blob
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    try:
        tree = DeviceTree.from_bytes(bytes(blob))
        tree.to_bytes()
    except BadInputError:
        pass
