"""The purgatory's sha256 regions: big segments cut into even shares so that the CPUs finish together."""
from __future__ import annotations

import hashlib
import os

from kexecfw.segments.digest import PIECE_ALIGN, sha256_regions
from kexecfw.segments.plan import Segment

MiB = 1 << 20


def segments() -> list[Segment]:
    # an arm64 panic load: a 31 MiB Image, a 16 MiB initrd, small ones
    return [Segment("kernel", os.urandom(31 * MiB + 123), 0x40000000, 40 * MiB),
            Segment("initrd", os.urandom(16 * MiB), 0x48000000, 16 * MiB),
            Segment("dtb", os.urandom(5000), 0x49000000, 8192)]


def check_cover(segs: list[Segment], regions: list[tuple[int, int, int, bytes]]) -> None:
    for s in segs:
        mine = [r for r in regions if s.mem <= r[0] < s.mem + s.memsz]
        assert mine[0][0] == s.mem and mine[-1][0] + mine[-1][2] == s.mem + s.memsz
        assert b"".join(s.buf[r[0] - s.mem:r[0] - s.mem + r[1]] for r in mine) == s.buf
        for r in mine:
            assert r[3] == hashlib.sha256(s.buf[r[0] - s.mem:r[0] - s.mem + r[1]]).digest()
            assert (r[0] - s.mem) % PIECE_ALIGN == 0 and r[1] <= r[2]
        assert all(r[1] == r[2] for r in mine[:-1])         # zero fill only after the last piece


def test_two_cpus_share_the_bytes_evenly() -> None:
    segs = segments()
    regions = sha256_regions(segs, 16, cpus=2)
    check_cover(segs, regions)
    assert len(regions) == 4                                # the kernel in two, the others whole
    assert max(r[1] for r in regions) <= sum(s.bufsz for s in segs) // 2 + PIECE_ALIGN


def test_one_cpu_keeps_one_region_per_segment() -> None:
    segs = segments()
    regions = sha256_regions(segs, 16, cpus=1)
    assert [(r[0], r[1], r[2]) for r in regions] == [(s.mem, s.bufsz, s.memsz) for s in segs]
    check_cover(segs, regions)


def test_no_more_regions_than_the_purgatory_holds() -> None:
    segs = segments()
    regions = sha256_regions(segs, 3, cpus=8)               # 8 shares would need more than 3 regions
    assert len(regions) == 3
    check_cover(segs, regions)


def test_empty_buffers_and_no_segments() -> None:
    seg = Segment("bss", b"", 0x1000, 0x2000)
    assert sha256_regions([seg], 16, cpus=2) == [(0x1000, 0, 0x2000, hashlib.sha256(b"").digest())]
    assert sha256_regions([], 16, cpus=2) == []
