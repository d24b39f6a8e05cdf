# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Memory as kexec sees it
#
# Before kexec can place a single byte it needs to know the machine's physical memory: which ranges are
# System RAM, what firmware reserved, where the running kernel's code sits, and — for kdump — the
# *crash kernel* region that `crashkernel=` set aside at boot. kexecfw reads all of this from a
# **sysroot**: the live `/`, or a snapshot of `/proc` and `/sys` taken on another machine.
#
# This notebook shows the memory maps of real machines: this one (live), and the arm64, x86_64 and
# riscv64 QEMU guests whose snapshots ship with the project or come out of the lab
# (`python -m kexecfw lab run`).

# %%
# %matplotlib inline
from pathlib import Path

import kexecfw
from kexecfw.load import discover_memory
from kexecfw.snapshot import find_snapshots, take_snapshot
from kexecfw.sysroot import Sysroot
from kexecfw.viz.render import draw_memmap, draw_memmaps

# the riscv64 guest's snapshot ships with the tests (tests/data/riscv64-guest: Debian 13, 1 GiB, crashkernel=256M)
RISCV64_GUEST = Path(kexecfw.__file__).resolve().parent.parent / "tests" / "data" / "riscv64-guest" / "snapshot"
snapshots = find_snapshots()
if RISCV64_GUEST.is_dir():
    snapshots["riscv64-guest fixture"] = RISCV64_GUEST
snapshots

# %% [markdown]
# ## This machine
# A snapshot of the live system, taken with the same code as `python -m kexecfw snapshot DIR`
# (root is needed for real addresses in /proc/iomem).

# %%
import tempfile

live = Path(tempfile.mkdtemp()) / "this-machine"
report = take_snapshot(Sysroot("/"), live)
print(f"{len(report.copied)} files copied; warnings: {report.warnings or 'none'}")
arch, memmap = discover_memory(Sysroot(live))
fig = draw_memmap(memmap, title=f"this machine ({arch.name})")
fig

# %% [markdown]
# The table view of the same map: top-level resources and the kernel's own ranges nested inside RAM.

# %%
rows = [(f"{'  ' * r.depth}{r.name}", f"{r.start:#x}", f"{r.range.last:#x}", f"{r.size / 2**20:,.1f} MiB")
        for r in memmap.regions if r.kind.name != "OTHER"]
print("\n".join(f"{n:<28} {s:>14} {e:>14} {m:>14}" for n, s, e, m in rows[:40]))

# %% [markdown]
# ## arm64, x86_64 and riscv64, side by side
# The architectures describe memory differently: arm64 starts RAM at 1 GiB (`PHYS_OFFSET`) and
# marks firmware and kernel reservations *inside* System RAM; x86_64 keeps the legacy low 1 MiB
# layout with BIOS/ACPI holes and reserves the crash region below 4 GiB. riscv64 (QEMU `virt`) starts
# RAM at 2 GiB like arm64 with its reservations inside System RAM — OpenSBI's firmware at the very
# start (0x80000000, 512 KiB), the kernel image at 0x80200000, memblock's own allocations as
# "Reserved" — and its crash region sits high in RAM. The broken axis gives each range room by the log
# of its size, so a 384 MiB crash region in a 2 GiB machine and a 4 KiB page are both visible.

# %%
maps = []
for label, path in snapshots.items():
    spec, m = discover_memory(Sysroot(path))
    maps.append((f"{spec.name} — {label}", m))
assert maps, "no snapshots found: run `python -m kexecfw lab run --arch arm64` to make one"
fig2 = draw_memmaps(maps)
fig2

# %% [markdown]
# What a panic load may use is exactly the crash region; what the capture kernel will read back is all
# System RAM *outside* it (these become the elfcorehdr's PT_LOADs). On riscv64 "outside" includes the
# Reserved ranges inside System RAM (memblock's allocations: `mem_section` is one of them), but not
# OpenSBI's firmware, which the capture kernel may not read: kexec-tools 2.0.32 leaves the Reserved
# ranges out, and makedumpfile then cannot read its dumps (notebook 04).

# %%
for title, m in maps:
    crash = m.main_crash_region
    dumped = sum(r.size for r in m.crash_dump_ranges)
    print(f"{title}: crash region {crash.start:#x}-{crash.last:#x} ({crash.size >> 20} MiB); "
          f"dumped RAM {dumped >> 20} MiB in {len(m.crash_dump_ranges)} ranges")

# %% [markdown]
# ## Explore
# Pick a sysroot and zoom into an address window (the figure updates; in a static render only the
# first state shows).

# %%
from kexecfw.viz.widgets import memmap_explorer

explorer = memmap_explorer(snapshots)
explorer
