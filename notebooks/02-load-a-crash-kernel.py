# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Load a crash kernel, step by step
#
# A panic load (`kexec -p`) puts a second kernel, its initrd, boot parameters, an ELF core header
# (*elfcorehdr*) and a small *purgatory* program into the crash region, so that on a panic the
# machine jumps into that kernel, which then reads the dead one's memory through `/proc/vmcore`.
#
# Here we plan such a load with kexecfw on the snapshot of a real Debian 6.1 arm64 machine with its
# real kernel, watch every hook call, look at what was built, and then compare with what happened
# when the same load ran for real in the QEMU lab and the machine crashed.
#
# **Lab data (what CI does):** the cells below use the most recent successful lab run found in
# `./lab-results` (or `$KEXECFW_LAB_RESULTS`). When there is none, or when
# `KEXECFW_NOTEBOOK_FRESH_LAB=1`, they boot a fresh one (`kexecfw.lab.run`, about 1-2 minutes under
# TCG): the guest snapshots itself, loads the crash kernel with kexecfw, crashes and captures.

# %%
# %matplotlib inline
from kexecfw.model import LoadOptions
from kexecfw.sysroot import Sysroot
from kexecfw.viz.labdata import lab_kernel, lab_result, lab_segment

lab = lab_result("arm64")
snapshot = Sysroot(lab.path("snapshot"))
options = LoadOptions(kernel=lab_kernel(lab), initrd=lab_segment(lab, "initrd"),
                      cmdline=lab.read_text("first/append").strip(), panic=True)
print(f"lab run:  {lab.directory} ({lab.kernel_release}, {'OK' if lab.ok else 'FAILED'})")
print(f"sysroot:  {snapshot.root}")
print(f"kernel:   {options.kernel} ({options.kernel.stat().st_size >> 20} MiB)")
print(f"initrd:   {options.initrd} ({options.initrd.stat().st_size >> 20} MiB, the capture initrd the guest used)")
print(f"cmdline:  {options.cmdline}")

# %% [markdown]
# ## The hook calls
# `record_plan` runs the real `plan_load` (no syscall: nothing is loaded anywhere) under a pluggy
# hook monitor. Each line: the hook, the plugins that implement it in the order pluggy calls them
# (the first non-None result wins for *firstresult* hooks), and what came back. For hooks that get
# the segment planner we also see the free holes of the crash region before the call and the
# segments it placed.

# %%
from kexecfw.viz.planview import format_holes, record_plan, table

recording = record_plan(options, snapshot, arch="arm64")
assert recording.error is None, recording.error
plan, ctx = recording.plan, recording.ctx
for i, step in enumerate(recording.steps, 1):
    print(f"{i:2}. {step.summary()}")
    if step.free_before is not None:
        print(f"      holes before: {format_holes(step.free_before)}")
        for seg in step.placed:
            print(f"      placed {seg.name} at {seg.mem:#x} ({seg.memsz:#x} bytes)")

# %% [markdown]
# The planner's own words (`ctx.log`), and the plan: five segments, all inside the crash region.

# %%
print("\n".join(ctx.log))
print()
segments = sorted(plan.segments, key=lambda s: s.mem)
print(table([(s.name, f"{s.mem:#x}", f"{s.memsz:#x}", f"{s.bufsz:#x}") for s in segments],
            ("segment", "mem", "memsz", "bufsz")))

# %%
from kexecfw.viz.render import draw_memmap

crash = plan.crash_region
pad = crash.size // 8
draw_memmap(ctx.memmap, plan=plan, window=(crash.start - pad, crash.end + pad),
            title=f"panic plan in the crash region ({lab.kernel_release})")

# %% [markdown]
# ## The device tree's /chosen, before and after (arm64)
# arm64 passes the command line, the initrd and — for a crash kernel — the elfcorehdr and the memory
# it may use through the DTB's `/chosen` node. kexecfw starts from the running kernel's tree
# (`/sys/firmware/fdt` in the snapshot) and rewrites these properties.

# %%
from kexecfw.viz.planview import chosen_diff

print(table(chosen_diff(ctx), ("/chosen property", "running kernel", "crash kernel")))

# %% [markdown]
# ## The elfcorehdr
# The ELF header the capture kernel turns into `/proc/vmcore`: one PT_NOTE per CPU (the per-CPU
# `crash_notes` buffers where each CPU saves its registers at the crash), one for VMCOREINFO, a
# PT_LOAD for the kernel's text mapping, and one PT_LOAD per range of System RAM outside the crash
# region.

# %%
from kexecfw.viz.crash import draw_elfcorehdr
from kexecfw.viz.planview import elfcorehdr_rows

phdrs = ctx.artifacts["elfcorehdr_phdrs"]
print(table(elfcorehdr_rows(phdrs), ("type", "physical range", "virtual address", "size")))
draw_elfcorehdr(phdrs, ctx.memmap, title="the planned elfcorehdr over the memory map")

# %% [markdown]
# ## The purgatory: relocations and patched symbols
# Purgatory runs between the two kernels: it checks the sha256 of every segment and jumps to the new
# kernel with the DTB address in x0. kexecfw links its relocatable object at the address the planner
# chose, then writes the values it needs into its symbols.

# %%
from kexecfw.viz.planview import purgatory_rows

relocations, patched = purgatory_rows(ctx)
print(table(relocations, ("relocation", "place", "symbol", "value")))
print()
print(table(patched, ("patched symbol", "address", "value")))

# %% [markdown]
# ## Step through it yourself
# The same recording as a widget: pick a sysroot, the architecture and the files, press *plan*, move
# the slider (a static render shows only the first state).

# %%
from kexecfw.snapshot import find_snapshots
from kexecfw.viz.widgets import plan_stepper

plan_stepper({"lab arm64": snapshot.root, **find_snapshots()}, kernel=str(options.kernel),
             initrd=str(options.initrd), cmdline=options.cmdline)

# %% [markdown]
# ## The same load, for real, in the QEMU lab
# In the guest, `kexecfw load -p` made this load with `kexec_load`, then `echo c > /proc/sysrq-trigger`
# crashed the kernel and the capture kernel booted. The phases of that run:

# %%
print(lab.summary())

# %% [markdown]
# Our plan (made here, on the host, from the guest's snapshot) against the guest's real load
# (`plan/plan.json`) and the guest's own dry-run on its snapshot (`dryrun.json`). Places and sizes must
# agree; the DTB (a fresh `kaslr-seed`) and the purgatory (the sha256 digests over it) differ in bytes.

# %%
import json

real = {s["name"]: s for s in json.loads(lab.read_text("plan/plan.json"))["segments"]}
dry = {s["name"]: s for s in json.loads(lab.read_text("dryrun.json"))["segments"]}
rows = []
for s in sorted(plan.segments, key=lambda s: s.mem):
    r, d = real.get(s.name, {}), dry.get(s.name, {})
    same_place = int(r.get("mem", "0"), 16) == s.mem == int(d.get("mem", "0"), 16) \
        and int(r.get("memsz", "0"), 16) == s.memsz
    rows.append((s.name, f"{s.mem:#x}", r.get("mem", "-"), d.get("mem", "-"), "yes" if same_place else "NO",
                 "yes" if r.get("sha256") == s.sha256 else "no"))
print(table(rows, ("segment", "here", "real load", "guest dry-run", "same place", "same bytes")))
assert all(row[4] == "yes" for row in rows)

# %% [markdown]
# ## The capture kernel's view
# What the crash kernel booted with: its command line, the `/chosen` properties it found (the
# elfcorehdr and usable memory we planned), and its `/proc/iomem`: only the crash region is its RAM.

# %%
from kexecfw.memory.iomem import parse_iomem

print("cmdline:", lab.read_text("capture/cmdline").strip())
for prop in ("linux,elfcorehdr", "linux,usable-memory-range"):
    cells = lab.path(f"capture/chosen/{prop}").read_bytes()
    print(f"/chosen {prop}:", " ".join(f"{int.from_bytes(cells[i:i + 8], 'big'):#x}" for i in range(0, len(cells), 8)))
capture_map = parse_iomem(lab.read_text("capture/iomem"), "capture kernel's /proc/iomem")
print(f"capture kernel's System RAM: {capture_map.ram_size >> 20} MiB "
      f"(the crash region was {plan.crash_region.size >> 20} MiB)")
draw_memmap(capture_map, title="the capture kernel's memory map: it lives in the crash region")
