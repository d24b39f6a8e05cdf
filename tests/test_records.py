"""kexecfw.records.TupleRecord: the namedtuple stand-in of the dump readers."""
from __future__ import annotations

import copy
import pickle

import pytest

from kexecfw.elfnotes import Note
from kexecfw.records import TupleRecord
from kexecfw.vmcore.dumpfile import PhysRange


def test_a_record_is_a_tuple_with_named_fields() -> None:
    r = PhysRange(0x1000, 0x2000, 0xffff0000)
    assert (r.start, r.end, r.vaddr) == (0x1000, 0x2000, 0xffff0000)
    assert r == (0x1000, 0x2000, 0xffff0000) and hash(r) == hash((0x1000, 0x2000, 0xffff0000))
    start, end, vaddr = r
    assert (start, end, vaddr) == tuple(r)
    assert sorted([PhysRange(5, 6), PhysRange(1, 2)]) == [(1, 2, None), (5, 6, None)]
    assert repr(r) == "PhysRange(start=4096, end=8192, vaddr=4294901760)"
    assert PhysRange._fields == ("start", "end", "vaddr")


def test_defaults_fill_the_trailing_fields() -> None:
    assert PhysRange(1, 2) == (1, 2, None)
    assert Note(b"CORE", 1, b"") == (b"CORE", 1, b"", 0)
    with pytest.raises(TypeError, match="takes 2 to 3 values, not 1"):
        PhysRange(1)
    with pytest.raises(TypeError, match="not 4"):
        PhysRange(1, 2, 3, 4)


def test_records_are_immutable_and_slotted() -> None:
    r = PhysRange(1, 2)
    with pytest.raises(AttributeError):
        r.start = 3
    with pytest.raises(AttributeError):
        r.other = 3        # __slots__ = (): no per-record dict for the thousands a reader makes


def test_replace_pickle_and_copy_keep_the_type() -> None:
    n = Note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n", 64)
    assert n._replace(offset=0) == Note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n", 0)
    with pytest.raises(TypeError, match="no field size"):
        n._replace(size=1)
    for twin in (pickle.loads(pickle.dumps(n)), copy.copy(n), copy.deepcopy(n)):
        assert type(twin) is Note and twin == n


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(TupleRecord):
            __slots__ = ()
            a: int = 0
            b: int
