"""Figures are produced headless, with the crash region and segments visible."""
from __future__ import annotations

import html

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
    assert "crash region" in [t.get_text() for t in ax.get_legend().get_texts()]
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


# --- crash views: the elfcorehdr, registers and log, page classes, the plan recording ------------------

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

from kexecfw.elfnotes import read_core_notes
from kexecfw.load import discover_memory


@pytest.fixture(params=["arm64", "x86_64"])
def mini_vmcore(request, tmp_path) -> Path:
    """The fixtures' ELF vmcore cut to the notes and the printk pages (a real crash of a 4-CPU guest)."""
    packed = fixture_path(request.param, "capture", "vmcore-mini.elf.xz")
    out = tmp_path / f"vmcore-{request.param}.elf"
    out.write_bytes(lzma.decompress(packed.read_bytes()))
    return out


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_elfcorehdr_figure_draws_each_load_over_ram(arch):
    from kexecfw.viz.crash import draw_elfcorehdr
    raw = fixture_path(arch, "capture", "vmcore-hdr+notes.bin").read_bytes()
    header, _ = read_core_notes(raw, "vmcore-hdr+notes.bin")
    _, memmap = discover_memory(Sysroot(fixture_path(arch, "sysroot")), arch=arch)
    ax = draw_elfcorehdr(header.phdrs, memmap).axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[0] == "System RAM, crash region" and "PT_LOAD: RAM" in rows
    loads = [p for p in header.phdrs if p.type == 1]
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert len(bars) >= len(loads) + 1                       # every PT_LOAD and the crash region
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("crash 384 MiB") for t in texts)
    assert "0x" in ax.get_xticklabels()[0].get_text()        # hex addresses, not raw numbers


def test_crash_notes_figure_from_a_real_vmcore(mini_vmcore):
    from kexecfw.viz.crash import draw_crash_notes, read_crash_notes
    notes = read_crash_notes(str(mini_vmcore))
    assert len(notes.cpus) == 4 and [c.cpu for c in notes.cpus if c.panic] == [2]
    assert notes.panic is not None and notes.panic[2] == "init"
    assert any("Kernel panic" in line for line in notes.log_tail)
    fig = draw_crash_notes(notes)
    table_ax, log_ax = fig.axes
    cells = table_ax.tables[0].get_celld()
    assert cells[(0, 0)].get_text().get_text() == "CPU"
    assert cells[(3, 0)].get_text().get_text() == "2 (panic)"
    assert cells[(3, 2)].get_text().get_text() == f"{notes.cpus[2].pc:#x}"
    assert [t.get_text() for t in log_ax.texts][:len(notes.log_tail)] == notes.log_tail[:24]


def test_cli_vmcore_notes_plot_writes_a_png(mini_vmcore, tmp_path):
    out = tmp_path / "notes.png"
    run = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "notes", str(mini_vmcore), "--plot", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    bad = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "notes", str(mini_vmcore), "--plot",
                          str(tmp_path / "no" / "such" / "dir.png")], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "cannot write the plot" in bad.stderr


def _lab_with_dump():
    """An earlier lab run with a -d 31 dump, else this session's shared x86_64 panic run (booted once)."""
    from kexecfw.viz.labdata import find_lab_results
    from tests.labruns import shared_lab_run
    for arch in ("arm64", "x86_64"):
        for d in find_lab_results(arch):
            if (d / "dump" / "kexecfw-d31.kdump").is_file():
                return d
    result = shared_lab_run("x86_64")
    assert result.ok, result.summary()
    return result.directory


@pytest.mark.slow
def test_page_classes_of_a_lab_dump():
    from kexecfw.lab import LabResult
    from kexecfw.viz.pageclasses import CLASS_BITS, count_page_classes, draw_page_classes
    lab = LabResult.load(_lab_with_dump())
    header, _ = lab.vmcore_headers()
    ram = [(p.paddr, p.paddr + p.memsz) for p in header.phdrs if p.type == 1]
    pages = count_page_classes(str(lab.path("dump/kexecfw-d31.kdump")), ram)
    assert set(pages.counts) == set(CLASS_BITS)
    assert pages.kept(0) == pages.ram_pages
    assert pages.kept(31) == pages.dumped_pages                    # the dump is -d 31
    assert pages.counts["free"] > pages.ram_pages // 10            # an idle 1 GiB guest: mostly free pages
    assert pages.kept(31) < pages.kept(16) < pages.kept(0)
    fig = draw_page_classes(pages, {"/proc/vmcore": lab.vmcore_size()})
    classes, levels, files = fig.axes
    assert [t.get_text() for t in classes.get_yticklabels()][1:] == ["zero (1)", "cache (2)", "cache private (4)",
                                                                    "user (8)", "free (16)"]
    assert [t.get_text() for t in levels.get_xticklabels()][0] == "-d 0"
    kept_bars = levels.containers[0]                               # one kept bar per level, what it leaves out on top
    assert len(kept_bars) == 9 and all(len(c) == 9 for c in levels.containers)
    for i in range(9):                                             # kept + left out = all RAM (-d 0 keeps it all)
        assert sum(c[i].get_height() for c in levels.containers) == pytest.approx(kept_bars[0].get_height())
    assert len(files.patches) == 1


def test_lab_results_are_found_newest_first(tmp_path, monkeypatch):
    from kexecfw.viz.labdata import find_lab_results
    for i, (name, ok, arch) in enumerate([("a", True, "arm64"), ("b", True, "arm64"), ("c", False, "arm64"),
                                          ("d", True, "x86_64")]):
        d = tmp_path / name
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"ok": ok, "arch": arch, "scenario": "panic", "loader": "kexecfw",
                                                   "generation": "6.1"}))
        os.utime(d / "result.json", (1000 + i, 1000 + i))
    monkeypatch.setenv("KEXECFW_LAB_RESULTS", str(tmp_path))
    found = [p for p in find_lab_results("arm64") if p.parent == tmp_path.resolve()]
    assert [p.name for p in found] == ["b", "a"]


def test_plan_recording_shows_hooks_holes_chosen_and_purgatory(tmp_path):
    from tests.arm64.conftest import arm64_kernel

    from kexecfw.model import LoadOptions
    from kexecfw.viz.crash import draw_elfcorehdr
    from kexecfw.viz.planview import chosen_diff, purgatory_rows, record_plan
    kernel = arm64_kernel("6.1")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(3 << 20))
    rec = record_plan(LoadOptions(kernel=kernel, initrd=initrd, cmdline="console=ttyAMA0", panic=True),
                      Sysroot(fixture_path("arm64", "sysroot")), arch="arm64")
    assert rec.error is None
    hooks = [s.hook for s in rec.steps]
    assert hooks.index("kexecfw_memory_map") < hooks.index("kexecfw_place_kernel") < hooks.index("kexecfw_purgatory")
    place = next(s for s in rec.steps if s.hook == "kexecfw_place_kernel")
    crash = rec.ctx.memmap.main_crash_region
    assert place.free_before == [crash] and [s.name for s in place.placed] == ["kernel"]
    changed = {name for name, _, _ in chosen_diff(rec.ctx)}
    assert {"bootargs", "linux,elfcorehdr", "linux,usable-memory-range", "linux,initrd-start"} <= changed
    relocations, patched = purgatory_rows(rec.ctx)
    assert relocations and "purgatory_kernel_entry" in [p[0] for p in patched]
    ax = draw_elfcorehdr(rec.ctx.artifacts["elfcorehdr_phdrs"], rec.ctx.memmap).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "PT_NOTE"
    assert "VMCOREINFO" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_cli_memmap_and_dry_run_plots(tmp_path):
    from tests.arm64.conftest import arm64_kernel
    sysroot = fixture_path("arm64", "sysroot")
    kexecfw = [sys.executable, "-m", "kexecfw", "--sysroot", str(sysroot)]
    memmap_png, plan_png = tmp_path / "memmap.png", tmp_path / "plan.png"
    run = subprocess.run(kexecfw + ["memmap", "--plot", str(memmap_png)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert memmap_png.read_bytes()[:4] == b"\x89PNG" and memmap_png.stat().st_size > 20_000
    kernel = arm64_kernel("6.1")
    run = subprocess.run(kexecfw + ["load", "-p", "--dry-run", str(kernel), "--append", "console=ttyAMA0",
                                    "--plot", str(plan_png)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert plan_png.read_bytes()[:4] == b"\x89PNG" and plan_png.stat().st_size > 20_000


def test_plan_stepper_walks_the_hook_calls():
    pytest.importorskip("ipywidgets")
    from tests.arm64.conftest import arm64_kernel

    from kexecfw.viz.widgets import plan_stepper
    kernel = arm64_kernel("6.1")
    box = plan_stepper({"arm64 fixture": fixture_path("arm64", "sysroot")}, kernel=str(kernel),
                       cmdline="console=ttyAMA0")
    slider = next(w for w in box.children if getattr(w, "description", "") == "hook call")
    assert slider.max >= 8 and not slider.disabled
    text = box.children[-1]                  # the step's description (an HTML widget)
    shown = []
    for i in range(1, slider.max + 1):
        slider.value = i
        shown.append(html.unescape(text.value))
    assert all(f"{i + 1}/{slider.max + 1}" in text for i, text in enumerate(shown, 1))
    place = next(text for text in shown if "kexecfw_place_kernel" in text)
    assert "plugins (call order)" in place and "holes before: 0x" in place and "placed kernel at 0x" in place


def _legend_colours(fig) -> dict[str, tuple]:
    """Legend name -> fill colour, over every legend of ``fig``."""
    out = {}
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            for text, handle in zip(leg.get_texts(), leg.legend_handles):
                out[text.get_text()] = tuple(handle.get_facecolor())
    return out


def test_one_colour_per_kind_across_architectures_and_one_legend():
    from kexecfw.viz.render import draw_memmaps
    maps = [(arch, read_iomem(Sysroot(fixture_path(arch, "sysroot")))) for arch in ("arm64", "x86_64")]
    fig = draw_memmaps(maps)
    assert [ax.get_legend() is not None for ax in fig.axes] == [True, False]     # one legend, shared
    colours = _legend_colours(fig)
    # x86_64 has all four parts of the kernel image, arm64 only two: both are in the shared legend
    for kind in ("System RAM", "reserved", "crash region", "kernel code", "kernel rodata", "kernel data", "kernel bss"):
        assert kind in colours, kind
    parts = [colours[k] for k in ("kernel code", "kernel rodata", "kernel data", "kernel bss")]
    assert len(set(parts)) == 4
    # each architecture alone draws its kinds in the shared colours
    for arch, memmap in maps:
        alone = _legend_colours(draw_memmap(memmap))
        assert all(alone[k] == colours[k] for k in alone), arch


def test_segment_colour_follows_its_name_not_its_position():
    from kexecfw.viz.palette import segment_colour
    memmap = read_iomem(Sysroot(fixture_path("arm64", "sysroot")))
    crash = memmap.main_crash_region
    one = Plan("arm64", "panic", "kexec_load", crash.start, 0, "", crash,
               [Segment("kernel", b"", crash.start, 0x2010000), Segment("elfcorehdr", b"", crash.end - 0x1000, 0x1000)])
    two = Plan("arm64", "panic", "kexec_load", crash.start, 0, "", crash,
               [Segment("initrd", b"", crash.start, 0x100000), Segment("kernel", b"", crash.start + 0x200000, 0x2010000)])
    for plan in (one, two):
        colours = _legend_colours(draw_memmap(memmap, plan=plan, window=(crash.start, crash.end)))
        from matplotlib.colors import to_rgba
        assert colours["segment: kernel"] == to_rgba(segment_colour("kernel"))


def _overlaps(boxes) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


def test_labels_that_do_not_fit_go_outside_and_collide_with_nothing():
    """The x86_64 guest's 639 KiB of low RAM and 4 KiB notes: labels beside or above, none over another."""
    from kexecfw.elfnotes import ProgramHeader
    from kexecfw.viz.crash import draw_elfcorehdr
    memmap = read_iomem(Sysroot(fixture_path("x86_64", "sysroot")))
    crash = memmap.main_crash_region
    ph = lambda kind, start, size: ProgramHeader(kind, 0, 0, 0, start, size, size, 0)  # noqa: E731
    phdrs = [ph(1, 0x1000, 0x9f000), ph(1, 0x100000, crash.start - 0x100000),
             ph(4, 0x5c701000, 424), ph(4, 0x5c702000, 424), ph(4, 0x3a00000, 4136)]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    for fig in (draw_memmap(memmap), draw_elfcorehdr(phdrs, memmap)):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ax = fig.axes[0]
        texts = [t for t in ax.texts if t.get_text()]
        extents = [t.get_window_extent(renderer) for t in texts]
        assert not _overlaps(extents), [t.get_text() for t in texts]
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(ticks) >= 3 and not _overlaps(ticks)
    labels = {t.get_text() for t in ax.texts}
    assert {"424 B", "4.04 KiB"} <= labels


def test_memmap_explorer_redraws_when_the_window_moves():
    pytest.importorskip("ipywidgets")
    from kexecfw.viz.widgets import memmap_explorer
    explorer = memmap_explorer({"x86_64 fixture": fixture_path("x86_64", "sysroot")})
    explorer.source.value = "x86_64 fixture"
    first, png = explorer.result, explorer.image.value
    assert png[:4] == b"\x89PNG" and first.axes[0].get_title() == "x86_64: x86_64 fixture"
    lo, hi = explorer.window.index
    explorer.window.index = (lo + 3, hi)
    assert explorer.result is not first and explorer.image.value != png
