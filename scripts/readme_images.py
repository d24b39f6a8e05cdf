"""Regenerate the README's pictures (docs/images/*.png) from the QEMU lab's results.

    .venv/bin/python scripts/readme_images.py [--out docs/images]

Uses the newest successful lab run of each architecture in ./lab-results or $KEXECFW_LAB_RESULTS,
booting a fresh one when there is none (as the notebooks do; see kexecfw/viz/labdata.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kexecfw.load import discover_memory  # noqa: E402
from kexecfw.model import LoadOptions  # noqa: E402
from kexecfw.sysroot import Sysroot  # noqa: E402
from kexecfw.viz.crash import draw_crash_notes, draw_elfcorehdr, read_crash_notes  # noqa: E402
from kexecfw.viz.labdata import lab_dump, lab_kernel, lab_result, lab_segment  # noqa: E402
from kexecfw.viz.pageclasses import count_page_classes, draw_page_classes  # noqa: E402
from kexecfw.viz.planview import record_plan  # noqa: E402
from kexecfw.viz.render import draw_memmap, draw_memmaps, save_figure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    labs = {arch: lab_result(arch) for arch in ("arm64", "x86_64")}

    maps = []
    for arch, lab in labs.items():
        _, memmap = discover_memory(Sysroot(lab.path("snapshot")), arch=arch)
        maps.append((f"{arch} QEMU guest, Debian {lab.kernel_release}, crashkernel={lab.settings.get('crashkernel')}",
                     memmap))
    written = {"memory-map.png": draw_memmaps(maps)}

    arm64 = labs["arm64"]
    options = LoadOptions(kernel=lab_kernel(arm64), initrd=lab_segment(arm64, "initrd"),
                          cmdline=arm64.read_text("first/append").strip(), panic=True)
    rec = record_plan(options, Sysroot(arm64.path("snapshot")), arch="arm64")
    if rec.error is not None:
        raise SystemExit(f"readme_images: the arm64 panic plan failed: {rec.error}")
    crash = rec.plan.crash_region
    pad = crash.size // 8
    written["panic-plan.png"] = draw_memmap(rec.ctx.memmap, plan=rec.plan, window=(crash.start - pad, crash.end + pad),
                                            title=f"arm64 panic load planned by kexecfw ({arm64.kernel_release})")
    written["elfcorehdr.png"] = draw_elfcorehdr(rec.ctx.artifacts["elfcorehdr_phdrs"], rec.ctx.memmap,
                                                title="arm64 elfcorehdr: what the capture kernel will read")

    x86 = labs["x86_64"]
    written["crash-notes.png"] = draw_crash_notes(read_crash_notes(str(lab_dump(x86))))
    header, _ = x86.vmcore_headers()
    pages = count_page_classes(str(lab_dump(x86)), [(p.paddr, p.paddr + p.memsz) for p in header.phdrs if p.type == 1])
    measured = {"/proc/vmcore (ELF)": x86.vmcore_size()}
    for f in sorted(x86.path("dump").glob("*-d31.kdump")):
        measured[f"{f.name.split('-d31')[0]} -d 31"] = f.stat().st_size
    written["page-classes.png"] = draw_page_classes(pages, measured, title=f"x86_64 ({x86.kernel_release})")

    for name, fig in written.items():
        save_figure(fig, str(out / name))
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
