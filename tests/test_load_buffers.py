"""A load's big buffers are not copied: the initrd is mapped, the kernel sliced, both handed to the kernel as they are."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from kexecfw.errors import BadInputError
from kexecfw.load import read_input
from kexecfw.model import KernelFile
from kexecfw.memory.ranges import Range
from kexecfw.segments.planner import Planner
from kexecfw.syscalls import buffer_address


def test_a_regular_file_is_mapped_writable_and_private(tmp_path):
    path = tmp_path / "initrd"
    path.write_bytes(b"0123456789" * 1000)
    buf = read_input(path, "initrd")
    assert isinstance(buf, memoryview) and not buf.readonly
    assert buf == b"0123456789" * 1000
    buf[0] = ord("X")                       # copy-on-write: the file does not change
    assert path.read_bytes()[:1] == b"0"


def test_a_kernel_file_gives_bytes_to_plugins_that_ask_and_a_view_to_those_that_do_not(tmp_path):
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ kernel bytes")
    kernel = KernelFile(path, read_input(path, "kernel"))
    assert not isinstance(kernel.view.obj, bytes) and kernel.view == b"MZ kernel bytes"   # the mapping
    assert type(kernel.data) is bytes and kernel.data.startswith(b"MZ")
    assert kernel == KernelFile(path, b"MZ kernel bytes") and KernelFile(path, b"x").data == b"x"


def test_an_empty_file_and_a_pipe_are_read(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_input(empty, "initrd") == b""
    r, w = os.pipe()
    os.write(w, b"from a pipe")
    os.close(w)
    try:
        assert read_input(Path(f"/proc/self/fd/{r}"), "initrd") == b"from a pipe"
    finally:
        os.close(r)


def test_missing_and_directory_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        read_input(tmp_path / "nope", "kernel")
    with pytest.raises(BadInputError, match="is a directory"):
        read_input(tmp_path, "kernel")


def test_the_planner_keeps_views_and_copies_bytearrays():
    planner = Planner([Range(0x100000, 0x10000000)])
    data = bytearray(b"k" * 8192)
    view = memoryview(data)[4096:]
    assert planner.add("kernel", view).buf is view
    copied = planner.add("other", data).buf
    data[0] = 0
    assert copied == b"k" * 8192 and isinstance(copied, bytes)


@pytest.mark.parametrize("make", [lambda b: b, lambda b: memoryview(bytearray(b))[3:],
                                  lambda b: memoryview(b)[3:]], ids=["bytes", "writable view", "read-only view"])
def test_buffer_address_points_at_the_bytes_without_a_copy(make):
    payload = b"xyzsegment bytes"
    buf = make(payload)
    address = buffer_address(buf)
    assert ctypes.string_at(address, len(buf)) == bytes(buf)
    if isinstance(buf, memoryview):         # the view's own bytes: its base's address + 3
        assert address == buffer_address(buf.obj) + 3
