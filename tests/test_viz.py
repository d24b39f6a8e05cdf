"""Figures are produced headless, with the crash region and segments visible."""
from __future__ import annotations

import pytest

from kexecfw.memory.iomem import read_iomem
from kexecfw.memory.ranges import Range
from kexecfw.segments.plan import Plan, Segment
from kexecfw.sysroot import Sysroot
from kexecfw.viz.render import draw_memmap
from kexecfw.viz.scale import AddressScale
from tests.conftest import fixture_path


def test_scale_is_monotonic_and_gives_small_regions_room():
    scale = AddressScale([0, 4 << 10, 256 << 20, 64 << 30], [(0, 4 << 10), (4 << 10, 256 << 20), (256 << 20, 64 << 30)])
    xs = [scale(a) for a in (0, 4 << 10, 256 << 20, 64 << 30)]
    assert xs == sorted(xs)
    assert xs[1] - xs[0] >= 1.0  # a 4 KiB page is still visible
    assert (xs[3] - xs[2]) / scale.width < 0.9  # 64 GiB does not crush everything else


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_memmap_figure_shows_crash_region(arch):
    memmap = read_iomem(Sysroot(fixture_path(arch, "sysroot")))
    fig = draw_memmap(memmap)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("crash 384 MiB") for t in texts)
    assert "Crash kernel" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(ax.patches) >= len([r for r in memmap.regions if r.kind.name != "OTHER"])


def test_plan_figure_labels_each_segment():
    memmap = read_iomem(Sysroot(fixture_path("arm64", "sysroot")))
    crash = memmap.main_crash_region
    plan = Plan("arm64", "panic", "kexec_load", crash.start, 0, "", crash,
                [Segment("kernel", b"", crash.start, 0x2010000), Segment("dtb", b"", crash.start + 0x3000000, 0x3000),
                 Segment("elfcorehdr", b"", crash.end - 0x1000, 0x1000)])
    fig = draw_memmap(memmap, plan=plan, window=(crash.start, crash.end))
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for name in ("kernel", "dtb", "elfcorehdr"):
        assert name in texts
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == "planned segments"
