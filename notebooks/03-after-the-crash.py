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
# # 03 · After the crash
#
# The QEMU lab boots a Debian 6.1 kernel, loads a crash kernel with kexecfw, crashes the guest with
# `echo c > /proc/sysrq-trigger`, and in the capture kernel reads `/proc/vmcore` and saves it with
# `kexecfw vmcore save -d 31` (and Debian's `makedumpfile -d 31` for comparison). Here we open what
# came back, for arm64 and x86_64: the notes of each CPU, their registers, VMCOREINFO, the log, and
# the crashed kernel's pages by makedumpfile class with the size of a dump at each level.
#
# **Lab data (what CI does):** the most recent successful lab run of each architecture found in
# `./lab-results` (or `$KEXECFW_LAB_RESULTS`); when there is none, or when
# `KEXECFW_NOTEBOOK_FRESH_LAB=1`, a fresh run boots (about 1-2 minutes per architecture under TCG).

# %%
# %matplotlib inline
from kexecfw.viz.labdata import lab_dump, lab_result

labs = {arch: lab_result(arch) for arch in ("arm64", "x86_64")}
for arch, lab in labs.items():
    print(f"{arch:7} {lab.directory}  kernel {lab.kernel_release}  {'OK' if lab.ok else 'FAILED'}")

# %% [markdown]
# ## The capture kernel's /proc/vmcore
# Its ELF header is the elfcorehdr the load built, with the notes gathered: the capture kernel merges
# the per-CPU PT_NOTEs into one and appends VMCOREINFO. Below: the notes, then the PT_LOADs drawn
# over the crashed machine's memory map (the crash region is the one part of RAM not in the dump).

# %%
from kexecfw.load import discover_memory
from kexecfw.sysroot import Sysroot
from kexecfw.viz.crash import draw_elfcorehdr

for arch, lab in labs.items():
    header, notes = lab.vmcore_headers()
    print(f"{arch}: /proc/vmcore {lab.vmcore_size() >> 20} MiB, {len(header.phdrs)} program headers; notes:")
    for n in notes:
        print(f"   {n.name.decode():<11} type {n.type:<3} {len(n.desc):5} bytes"
              + ("  (NT_PRSTATUS: one CPU's registers)" if n.type == 1 else ""))

arch = "arm64"
header, _ = labs[arch].vmcore_headers()
_, memmap = discover_memory(Sysroot(labs[arch].path("snapshot")), arch=arch)
draw_elfcorehdr(header.phdrs, memmap, title=f"{arch}: /proc/vmcore's PT_LOADs over the crashed kernel's memory")

# %% [markdown]
# ## Registers per CPU
# Each CPU saved its registers in an NT_PRSTATUS note when the kernel crashed: the panicking CPU in
# `__crash_kexec`, the others when they were stopped. kexecfw names pc and lr with the kernel's own
# symbol table, read from the dump (kallsyms, no vmlinux needed), and finds each note's CPU from the
# per-CPU `crash_notes` buffers — as `kexecfw vmcore notes` does.

# %%
from kexecfw.viz.crash import draw_cpu_registers, read_crash_notes

crash_notes = {arch: read_crash_notes(str(lab_dump(lab))) for arch, lab in labs.items()}
draw_cpu_registers(crash_notes["arm64"])

# %%
draw_cpu_registers(crash_notes["x86_64"])

# %% [markdown]
# ## VMCOREINFO
# The crashed kernel's description of itself for dump tools: release, page size, KASLR offset, and the
# symbols, structure sizes and offsets the readers need (mem_map, the printk ring buffer, page flags).

# %%
from kexecfw.vmcore import open_dump

for arch, lab in labs.items():
    with open_dump(str(lab_dump(lab))) as dump:
        info = dump.vmcoreinfo
        typed = info.typed()
    kinds = {}
    for key in typed:
        kind = key.split("(")[0] if "(" in key else "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{arch}: {info.osrelease}, page size {info.page_size}, KERNELOFFSET "
          f"{info.kernel_offset:#x}, build id {info.build_id}")
    print("   " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    print("   " + ", ".join(f"{k}={typed[k]:#x}" if isinstance(typed[k], int) else f"{k}={typed[k]}"
                            for k in ("SYMBOL(mem_section)", "SIZE(page)", "OFFSET(page.flags)", "NUMBER(PG_lru)")
                            if k in typed))

# %% [markdown]
# ## The log
# The crashed kernel's printk ring buffer, read from the dump: from the crash trigger on.

# %%
from kexecfw.viz.crash import draw_dmesg_tail

draw_dmesg_tail(crash_notes["arm64"].log_tail, title="arm64: the crashed kernel's log from the crash on")

# %% [markdown]
# The same log read three ways must agree: kexecfw in the capture kernel (from /proc/vmcore),
# Debian's `vmcore-dmesg` there, and kexecfw here from the saved `-d 31` dump.

# %%
for arch, lab in labs.items():
    theirs = lab.crashed_dmesg().rstrip().splitlines()
    ours = crash_notes[arch].log_tail
    start = theirs.index(ours[0]) if ours and ours[0] in theirs else -1
    same = start >= 0 and theirs[start:start + len(ours)] == ours
    print(f"{arch}: vmcore-dmesg {len(theirs)} lines; the {len(ours)} lines from the crash on, read here from "
          f"the -d 31 dump, are {'identical' if same else 'DIFFERENT'}")
    assert same

# %% [markdown]
# ## Pages by class, and the size of a dump at each level
# makedumpfile's `-d` bits drop classes of pages: 1 zero, 2 cache, 4 cache private, 8 user, 16 free.
# A `-d 31` dump keeps mem_map (the kernel's `struct page` array), so kexecfw's classifier can count
# every class from it; zero pages are those the dump left out that no other class claims. The middle
# panel is what a dump would keep at each level, the right one the files the lab really wrote.

# %%
from kexecfw.viz.pageclasses import count_page_classes, draw_page_classes

figures = {}
for arch, lab in labs.items():
    header, _ = lab.vmcore_headers()
    ram = [(p.paddr, p.paddr + p.memsz) for p in header.phdrs if p.type == 1]
    pages = count_page_classes(str(lab_dump(lab)), ram)
    measured = {"/proc/vmcore (ELF, -d 0)": lab.vmcore_size()}
    for f in sorted(lab.path("dump").glob("*-d31.kdump")):
        measured[f"{f.name.split('-d31')[0]} -d 31 (compressed)"] = f.stat().st_size
    print(f"{arch}: {pages.ram_pages:,} RAM pages; " + ", ".join(f"{k} {v:,}" for k, v in pages.counts.items())
          + f"; -d 31 keeps {pages.kept(31):,}")
    figures[arch] = draw_page_classes(pages, measured, title=f"{arch} ({lab.kernel_release})")
figures["arm64"]

# %%
figures["x86_64"]
