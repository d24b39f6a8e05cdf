"""Decoding the printk arrays' entries with the offsets VMCOREINFO gives, whatever their order."""
from __future__ import annotations

import struct

import pytest

from kexecfw.errors import BadInputError
from kexecfw.vmcore.dmesg import _entry_fields


def test_fields_come_back_in_the_order_asked_whatever_their_offsets():
    buf = struct.pack("<QQHBBI", 1, 2, 3, 4, 5, 6) + struct.pack("<QQHBBI", 11, 12, 13, 14, 15, 16)
    in_order = [("seq", 0, "Q"), ("ts_nsec", 8, "Q"), ("text_len", 16, "H"), ("caller_id", 20, "I")]
    assert list(_entry_fields(buf, 24, "printk_info", in_order)) == [(1, 2, 3, 6), (11, 12, 13, 16)]
    shuffled = [("caller_id", 20, "I"), ("seq", 0, "Q"), ("flags", 19, "B")]
    assert list(_entry_fields(buf, 24, "printk_info", shuffled)) == [(6, 1, 5), (16, 11, 15)]


def test_overlapping_or_outside_offsets_are_bad_input():
    with pytest.raises(BadInputError, match=r"OFFSET\(prb_desc.next\) overlaps"):
        _entry_fields(bytes(24), 24, "prb_desc", [("begin", 8, "Q"), ("next", 12, "Q")])
    with pytest.raises(BadInputError, match=r"OFFSET\(prb_desc.next\) lies outside its struct \(24 bytes\)"):
        _entry_fields(bytes(24), 24, "prb_desc", [("begin", 8, "Q"), ("next", 20, "Q")])
