from hypothesis import given, strategies as st

from kexecfw.memory.holes import find_hole
from kexecfw.memory.ranges import Range, intersect, merge, subtract, total_size

ranges = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 16)).map(lambda t: Range(t[0], t[0] + t[1])),
                  max_size=12)


def covered(rs: list[Range]) -> set[int]:
    return {a for r in rs for a in range(r.start, r.end, 97)} if rs else set()


def test_inclusive_notation_matches_iomem():
    r = Range.inclusive(0x1000, 0x1FFF)
    assert (r.start, r.end, r.size, r.last) == (0x1000, 0x2000, 0x1000, 0x1FFF)


@given(ranges)
def test_merge_is_sorted_disjoint_and_keeps_coverage(rs):
    m = merge(rs)
    assert all(a.end < b.start for a, b in zip(m, m[1:]))
    assert total_size(m) <= sum(r.size for r in rs)
    for r in rs:
        if r.size:
            assert any(x.contains(r) for x in m)


@given(ranges, ranges)
def test_subtract_removes_exactly_the_holes(rs, holes):
    out = subtract(rs, holes)
    for r in out:
        assert not any(r.overlaps(h) for h in holes)
        assert any(x.contains(r) for x in merge(rs))
    assert total_size(out) + total_size(intersect(rs, holes)) == total_size(rs)


@given(ranges, st.integers(1, 1 << 14), st.sampled_from([1 << 12, 1 << 16, 1 << 21]), st.booleans())
def test_find_hole_fits_inside_one_free_range(rs, size, align, top_down):
    start = find_hole(rs, size, align=align, top_down=top_down)
    if start is None:
        # nothing aligned fits anywhere: check by brute force on each range
        for r in merge(rs):
            first = (r.start + align - 1) // align * align
            assert first + size > r.end
    else:
        assert start % align == 0
        assert any(r.contains(Range(start, start + size)) for r in merge(rs))


def test_find_hole_lowest_and_highest():
    free = [Range(0x1000, 0x5000), Range(0x10000, 0x20000)]
    assert find_hole(free, 0x2000) == 0x1000
    assert find_hole(free, 0x2000, top_down=True) == 0x1E000
    assert find_hole(free, 0x8000) == 0x10000
    assert find_hole(free, 0x2000, min_addr=0x4000) == 0x10000
    assert find_hole(free, 0x2000, max_addr=0x2800) is None
    assert find_hole(free, 0x2000, max_addr=0x3000) == 0x1000
