"""kexecfw.records.Record: the dataclass stand-in of the load path (built without dataclasses)."""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest

from kexecfw.memory.ranges import Range
from kexecfw.model import ArchSpec, LoadContext, LoadOptions
from kexecfw.records import Record, fresh
from kexecfw.segments.plan import Plan, Segment


class Point(Record, frozen=True):
    x: int
    y: int = 0


class Point3(Point):
    z: int = 0


class Bag(Record):
    name: str
    items: list[int] = fresh(list)


def test_values_by_position_keyword_and_default() -> None:
    assert (Point(1, 2).x, Point(1, 2).y) == (1, 2)
    assert Point(y=5, x=1) == Point(1, 5)
    assert Point(1).y == 0
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    with pytest.raises(TypeError, match="needs a value for x"):
        Point()
    with pytest.raises(TypeError, match="repeated field x"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="no field w"):
        Point(1, w=2)
    with pytest.raises(TypeError, match="at most 2 values, not 3"):
        Point(1, 2, 3)


def test_fresh_defaults_are_not_shared() -> None:
    a, b = Bag("a"), Bag("b")
    a.items.append(1)
    assert b.items == [] and "items" not in Bag.__dict__


def test_frozen_records_refuse_changes_and_hash_their_fields() -> None:
    p = Point(1, 2)
    with pytest.raises(AttributeError, match="frozen"):
        p.x = 3
    with pytest.raises(AttributeError, match="frozen"):
        del p.x
    assert hash(p) == hash(Point(1, 2)) and {p, Point(1, 2)} == {p}


def test_mutable_records_compare_by_value_and_do_not_hash() -> None:
    assert Bag("a", [1]) == Bag("a", [1]) and Bag("a") != Bag("b")
    assert Bag("a") != ("a", [])           # another class: never equal
    with pytest.raises(TypeError):
        hash(Bag("a"))


def test_eq_false_is_identity() -> None:
    s = Segment("kernel", b"x", 0, 4096)
    assert s != Segment("kernel", b"x", 0, 4096) and s == s and {s: 1}[s] == 1


def test_subclasses_add_fields_after_the_parents() -> None:
    assert Point3._fields == ("x", "y", "z")
    assert Point3(1, z=3) == Point3(1, 0, 3) and Point3(1) != Point(1)
    with pytest.raises(AttributeError):
        Point3(1).z = 2                    # frozen like its parent


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(Record):
            a: int = 0
            b: int


def test_post_init_runs_after_the_fields() -> None:
    class Checked(Record):
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    assert Checked(1).n == 1
    with pytest.raises(ValueError):
        Checked(-1)


def test_replace_copy_and_pickle_keep_the_type() -> None:
    plan = Plan("x86_64", "panic", "kexec_file_load", 0, 1, "", None)
    twin = plan._replace(syscall="kexec_load")
    assert twin.syscall == "kexec_load" and twin.mode == "panic" and plan.syscall == "kexec_file_load"
    with pytest.raises(TypeError, match="no field nope"):
        plan._replace(nope=1)
    p = Point3(1, 2, 3)
    for other in (copy.copy(p), copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert type(other) is Point3 and other == p


def test_load_context_defaults() -> None:
    spec = ArchSpec(name="toy", aliases=(), elf_machine=1)
    ctx = LoadContext(arch=spec, sysroot=None, options=LoadOptions(kernel=None))
    ctx.note("one")
    assert ctx.log == ["one"] and LoadContext(spec, None, LoadOptions(None)).log == []
    assert spec.page_size == 4096 and spec.kexec_arch == 1 << 16


def test_range_is_a_checked_tuple() -> None:
    assert Range(1, 5) == Range(1, 5) and sorted([Range(4, 5), Range(1, 9)]) == [Range(1, 9), Range(4, 5)]
    assert repr(Range(0, 16)) == "Range(start=0, end=16)" and Range(0, 16).size == 16 and 3 in Range(0, 16)
    assert pickle.loads(pickle.dumps(Range(2, 3))) == Range(2, 3) and Range(start=2, end=3).end == 3
    with pytest.raises(ValueError, match="invalid range"):
        Range(5, 1)


def test_the_load_model_imports_no_dataclasses() -> None:
    code = ("import sys; import kexecfw.load, kexecfw.plugins.x86_64.hooks, kexecfw.plugins.arm64.hooks; "
            "print(' '.join(m for m in ('dataclasses', 'copy', 'weakref') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []
