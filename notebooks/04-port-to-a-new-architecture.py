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
# # 04 · Porting kexecfw to a new architecture: riscv64, hook by hook
#
# Debian 13 ships riscv64 as a release architecture, yet it has no working kdump there: trixie builds
# no kexec-tools and no kdump-tools for riscv64, and the only released riscv loader, kexec-tools 2.0.32
# (Debian sid), writes crash dumps that trixie's makedumpfile cannot read. `plugins/riscv64` is
# kexecfw's port: an ordinary pluggy plugin, installed as `kexecfw.plugins.riscv64` and found through
# the `kexecfw` entry point, as a third-party architecture package would be.
#
# This notebook follows the port hook by hook on a real Debian 13 riscv64 guest (the QEMU lab's
# snapshot, committed in `tests/data/riscv64-guest`), then shows the proof: two recorded lab runs in
# the same guest, one loaded by kexec-tools 2.0.32, one by kexecfw (`tests/data/riscv64-lab`; no guest
# is booted here).

# %%
# %matplotlib inline
import inspect

import kexecfw.hookspecs as hookspecs
from kexecfw.pluginmanager import Hooks, describe_plugins, new_plugin_manager

pm = new_plugin_manager()
hooks = Hooks(pm)
riscv64 = next(p for p in describe_plugins(pm) if p["name"] == "riscv64")
print(f"plugin {riscv64['name']} ({riscv64['module']}), architectures {riscv64['architectures']}\n")
for name in [n for n in dir(hookspecs) if n.startswith("kexecfw_")]:
    spec = getattr(hookspecs, name)
    first = inspect.getdoc(spec).splitlines()[0]
    mark = "riscv64" if name in riscv64["hooks"] else ""
    print(f"{name:<28} {mark:<8} {first}")

# %% [markdown]
# The core calls a hook on **the architecture's own plugin only** (`Hooks.for_arch`, pluggy's
# `subset_hook_caller`), plus the core's defaults: a riscv64 load never asks the arm64 or x86_64
# plugin anything, so no hook implementation checks whose turn it is. riscv64 implements seven hooks;
# the rest (memory map, plan order, finalising) are the core's.
#
# ## The machine
# The first kernel's `/proc/iomem` on the guest (QEMU `virt`, OpenSBI, 2 harts, 1 GiB,
# `crashkernel=256M`): one System RAM range with memblock's "Reserved" ranges nested inside it.

# %%
from pathlib import Path

import kexecfw
from kexecfw.sysroot import Sysroot

DATA = Path(kexecfw.__file__).resolve().parent.parent / "tests" / "data"   # the checkout's test data
GUEST = DATA / "riscv64-guest"
snapshot = Sysroot(GUEST / "snapshot")
print(snapshot.read_text("proc/iomem"))

# %% [markdown]
# ## Watch the core call the plugin
# A panic load planned against that snapshot (`kexecfw --sysroot ... load -p --dry-run`), with the
# guest's real Image header (its first 4 KiB, padded: the plan is real, the kernel is not bootable) and
# a small initrd. `HookRecorder` records each hook call: who implemented it and what came back.

# %%
import tempfile

from kexecfw.load import plan_load
from kexecfw.model import LoadOptions
from kexecfw.pluginmanager import HookRecorder

work = Path(tempfile.mkdtemp())
head = (GUEST / "Image-head.bin").read_bytes()
kernel = work / "Image"
kernel.write_bytes(head + bytes((1 << 20) - len(head)))
initrd = work / "initrd.img"
initrd.write_bytes(b"07070" + bytes(5 << 20))
options = LoadOptions(kernel=kernel, initrd=initrd, cmdline="console=ttyS0 maxcpus=1 reset_devices", panic=True)

with HookRecorder(pm) as rec:
    plan, ctx = plan_load(options, snapshot, arch="riscv64", hooks=hooks)
for call in rec.calls:
    print(f"{call.hook:<26} called on {', '.join(call.implementers) or '(none)':<28} -> {type(call.result).__name__}")

# %% [markdown]
# `kexecfw_architectures` is asked of every plugin (that is how the core learns who serves what);
# every other call went to riscv64 and the core only. Now each of riscv64's hooks in turn.
#
# ### `kexecfw_architectures`: what riscv64 is
# Its ELF machine, the syscall numbers of `asm-generic/unistd.h`, and `KEXEC_ARCH_RISCV`
# (243 << 16) for `kexec_load`'s flags. Debian's riscv64 kernel has `CONFIG_KEXEC=y` but no
# `CONFIG_KEXEC_FILE`: the plugin loads with `kexec_load`, building the DTB and elfcorehdr itself.

# %%
spec = hooks.arch("riscv64")
{k: (hex(v) if isinstance(v, int) and v > 4096 else v) for k, v in vars(spec).items()}

# %% [markdown]
# ### `kexecfw_probe_kernel`: the Image header (`plugins/riscv64/image.py`)
# `/boot/vmlinux-*-riscv64` is the flat Image with an EFI stub ("MZ" in `code0`): a 64-byte header
# with `text_offset`, `image_size` (bss included), flags (bit 0: big-endian, refused) and the magic
# "RSC\x05". A gzip'd Image is unwrapped; EFI zboot images and vmlinux ELF files are refused in one line
# that says what to pass instead. The header checks riscv64 shares with arm64 are the core's
# (`kexecfw.flatimage.check_header`).

# %%
ctx.kernel.format, ctx.kernel.details

# %% [markdown]
# ### `kexecfw_place_kernel` and `kexecfw_place_initrd` (`kexecfw.flatimage`, `placement.py`)
# The kernel goes at a 2 MiB aligned base + `text_offset` (a 64-bit kernel needs a PMD-aligned start)
# and reserves `image_size`: the core's `flatimage.place_kernel`, the same function arm64 uses. The
# initrd goes above the kernel's 2 MiB-rounded reservation, the DTB (at most 2 MiB: the kernel maps it
# through its FDT fixmap) above the initrd. For a panic load all of it lands in the crash region.

# %%
print("\n".join(line for line in ctx.log if line.startswith(("kernel at", "initrd at", "dtb at"))))

# %% [markdown]
# ### `kexecfw_elfcore_info`: what the capture kernel will read (`vmcore_facts.py`)
# The elfcorehdr tells the capture kernel where the crashed kernel's memory is, physically and
# virtually. From VMCOREINFO in `/proc/kcore`: Sv39/48/57 (`VA_BITS`), `PAGE_OFFSET` at
# `phys_ram_base` (printed in *decimal*), `va_kernel_pa_offset` for the kernel image. From iomem and
# the device tree: the RAM to dump — **System RAM including its Reserved ranges** (memblock's
# allocations: page tables, per-CPU areas, `mem_section`), minus the crash region and minus OpenSBI's
# M-mode firmware (`/reserved-memory/mmode_resv*`, which PMP forbids S-mode to read: with it in the
# dump, reading /proc/vmcore fails with EFAULT).

# %%
print(next(line for line in ctx.log if line.startswith("kernel image")))
from kexecfw.elfnotes import parse_elf_header

elfcorehdr = parse_elf_header(plan.segment("elfcorehdr").buf, "planned elfcorehdr")
for p in elfcorehdr.phdrs:
    kind = {1: "PT_LOAD", 4: "PT_NOTE"}.get(p.type, p.type)
    print(f"{kind:<8} paddr {p.paddr:#012x} vaddr {p.vaddr:#020x} size {p.memsz:#x}")

# %% [markdown]
# ### `kexecfw_boot_params`: the DTB and its `/chosen` (`kexecfw.dtboot`)
# The running kernel's DTB (`/sys/firmware/fdt`) with `/chosen` rewritten: bootargs, the initrd's
# start and (exclusive) end, for a panic load `linux,elfcorehdr` and `linux,usable-memory-range`,
# fresh `rng-seed`/`kaslr-seed`, stale kexec properties removed. arm64 reads the very same properties
# (drivers/of/fdt.c), so this is the core's `kexecfw.dtboot`, shared by both plugins. riscv's
# `kexec_load` finds the DTB by its FDT magic among the segments and enters the next kernel with
# a0 = hart id, a1 = the DTB — so riscv64 needs **no purgatory** (`kexecfw_purgatory` returned None).

# %%
from kexecfw.memory.devicetree import DeviceTree

dtb = DeviceTree.from_bytes(plan.segment("dtb").buf, "planned dtb")
{name: (value.rstrip(b"\0").decode() if name == "bootargs" else value.hex(" ", 4))
 for name, value in dtb.properties("/chosen").items() if name not in ("rng-seed", "stdout-path")}

# %%
from kexecfw.cli.load import format_plan
from kexecfw.viz.render import draw_memmap

print(format_plan(plan, ctx))
draw_memmap(ctx.memmap, plan=plan, title="riscv64: a panic load planned in the guest's crash region")

# %% [markdown]
# ### The capture side: `capture.py`, no hook at all
# The dump readers (`vmcore info|notes|dmesg|save`) run in the capture kernel, where start-up time
# counts: they do without pluggy and without the plugin's load code. Each architecture package has a
# light `capture` module the core finds by the dump's ELF machine (`kexecfw.machines`: built-ins by
# name, others such as riscv64 through the `kexecfw` entry points): its utsname, page sizes and
# physical address bits, the NT_PRSTATUS register layout of riscv's `struct user_regs_struct`, and the
# translator that walks Sv39/Sv48/Sv57 page tables (`plugins/riscv64/translate.py`).

# %%
from kexecfw.machines import machine_capture

capture = machine_capture(spec.elf_machine)
print(capture.name, capture.uts_machines, "registers:", " ".join(capture.registers))

# %% [markdown]
# ### What the port needed from the core
# Nothing riscv64-specific. What arm64 and riscv64 both do moved into the core and is shared:
# `kexecfw.dtboot` (the source DTB parsed once, the `/chosen` rewrite, the DTB's placement, firmware
# reservations), `kexecfw.flatimage` (the Image header checks, the kernel's placement),
# `kexecfw.running` (VMCOREINFO of /proc/kcore, kallsyms lookups), one `signed64`; the core calls a
# hook on the architecture's own plugin only (`Hooks.for_arch`); the capture side's facts moved out of
# the core into each plugin's `capture.py` (`kexecfw.machines`), so the dump readers name no machine;
# the dump writer puts riscv64's `phys_ram_base` in the kdump header's `phys_base` (makedumpfile finds
# `mem_section` through it).
#
# ## The proof: kexec-tools 2.0.32 and kexecfw in the same guest
# The lab ran the same Debian 13 guest twice (`python -m kexecfw lab run --arch riscv64
# --kernel-generation 6.12 --loader kexec-tools`, then `--loader kexecfw`): load a crash kernel,
# `echo c > /proc/sysrq-trigger`, and in the capture kernel read /proc/vmcore with makedumpfile 1.7.6.
# The two runs' small files are committed; `LabResult.load` reads them like a whole run.

# %%
from kexecfw.lab.result import LabResult

RECORDED = DATA / "riscv64-lab"
runs = {loader: LabResult.load(RECORDED / loader) for loader in ("kexec-tools", "kexecfw")}
print((runs["kexec-tools"].read_text("first/steps/kexec-version.out") or "").strip(), "(Debian sid, in the trixie guest)")
for loader, run in runs.items():
    print(f"--- {loader} ({run.kernel_release}): {'OK' if run.ok else 'FAILED'}")
    for p in run.phases:
        if "makedumpfile" in p.name or p.name.startswith("load"):
            print(f"  {'ok  ' if p.ok else 'fail'} {p.name}" + (f"  - {p.detail}" if p.detail else ""))

# %% [markdown]
# The kexec-tools run *passes*: its check is that makedumpfile fails on kexec-tools' dump with the
# known message (`runner.KNOWN_DEFECTS`); if a later kexec-tools fixed it, the run would fail and say
# so. (In that run "kexecfw's saved dump" is `kexecfw vmcore save` of kexec-tools' /proc/vmcore:
# mem_section is missing from it too, so makedumpfile fails there as well — an optional phase.) The kexecfw run requires makedumpfile to read both /proc/vmcore and the dump `kexecfw vmcore
# save` wrote. What makedumpfile said on kexec-tools' dump, exactly:

# %%
import re

theirs_err = runs["kexec-tools"].read_text("capture/steps/makedumpfile.err")
print(theirs_err)
mem_section = int(re.search(r"non-existent page at (0x[0-9a-f]+)", theirs_err).group(1), 16)

# %% [markdown]
# The page it looks for is the `mem_section` array, which memblock allocated in a "Reserved" range
# inside System RAM. kexec-tools' elfcorehdr leaves every Reserved range out (and computes its
# linear-map virtual addresses from a wrong `page_offset`, `0xffffffff80bff000` in its debug output,
# instead of `PAGE_OFFSET` 0xff60000000000000); kexecfw's covers them:

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from kexecfw.memory.iomem import parse_iomem

iomem = parse_iomem(runs["kexecfw"].read_text("snapshot/proc/iomem"))
lanes = {"kexecfw PT_LOADs": [], "kexec-tools 2.0.32 PT_LOADs": []}
for loader, label in (("kexecfw", "kexecfw PT_LOADs"), ("kexec-tools", "kexec-tools 2.0.32 PT_LOADs")):
    header, _ = runs[loader].vmcore_headers()
    lanes[label] = [(p.paddr, p.memsz, p.vaddr) for p in header.phdrs if p.type == 1]
reserved = [(r.start, r.size) for r in iomem.regions if r.name == "Reserved"]
crash = iomem.main_crash_region

fig, ax = plt.subplots(figsize=(11, 2.8))
GiB = 1 << 30
ax.broken_barh([(r.start / GiB, r.size / GiB) for r in iomem.system_ram], (3, 0.8), color="#9ecae1")
ax.broken_barh([(s / GiB, n / GiB) for s, n in reserved], (3, 0.8), color="#636363")
ax.broken_barh([(crash.start / GiB, crash.size / GiB)], (3, 0.8), color="#fdae6b")
for y, (label, loads) in enumerate(lanes.items(), start=1):
    ax.broken_barh([(s / GiB, n / GiB) for s, n, _ in loads], (y, 0.8), color="#31a354" if y == 1 else "#de2d26")
ax.axvline(mem_section / GiB, color="black", linestyle="--")
ax.text(mem_section / GiB, 4.0, f" mem_section {mem_section:#x}", va="bottom", fontsize=9)
ax.set_yticks([1.4, 2.4, 3.4], ["kexecfw PT_LOADs", "kexec-tools 2.0.32 PT_LOADs", "guest RAM (iomem)"])
ax.set_xlabel("physical address (GiB)")
ax.set_ylim(0.8, 4.6)
ax.legend(handles=[Patch(color="#9ecae1", label="System RAM"), Patch(color="#636363", label="Reserved"),
                   Patch(color="#fdae6b", label="Crash kernel")], loc="lower left", fontsize=8, ncol=3)
ax.set_title("What each loader's elfcorehdr gives the capture kernel to read (riscv64, Debian 13)")
plt.show()

# %% [markdown]
# The same as numbers. The first PT_LOAD of both is the kernel image at its kernel-mapping address;
# every other one should sit in the linear map, `PAGE_OFFSET` at `phys_ram_base` (VMCOREINFO):

# %%
_, notes = runs["kexecfw"].vmcore_headers()
vmcoreinfo = next(n.desc for n in notes if n.name == b"VMCOREINFO").decode()
page_offset = int(re.search(r"NUMBER\(PAGE_OFFSET\)=(\w+)", vmcoreinfo).group(1), 0)
phys_ram_base = int(re.search(r"NUMBER\(phys_ram_base\)=(\d+)", vmcoreinfo).group(1))  # decimal
for label, loads in lanes.items():
    covers = any(s <= mem_section < s + n for s, n, _ in loads)
    wrong = [hex(v) for s, n, v in loads[1:] if v != s - phys_ram_base + page_offset]
    print(f"{label}: {len(loads)} PT_LOADs, {sum(n for _, n, _ in loads) >> 20} MiB; covers mem_section: "
          f"{covers}; linear-map vaddrs off: {wrong or 'none'}")

# %% [markdown]
# And the dump `kexecfw vmcore save -d 31` wrote in the capture kernel is read by trixie's own tools:
# makedumpfile 1.7.6 in the guest (`--dump-dmesg` on the saved file), and crash 8.0.6 — the riscv64
# binary from trixie, run on the host under qemu-user with the kernel's debug vmlinux from
# `linux-image-*-riscv64-dbg` (`kexecfw.lab.readers.run_crash`; crash needs far more memory than a
# capture kernel has). crash runs with `--zero_excluded`: `-d 31` leaves out zero pages, and crash
# reads riscv64's whole 16 MiB mem_section root table at start-up, all zero pages but the first
# (on makedumpfile's own `-d 31` dump of the same crash it stops too, at an excluded "pmd page").

# %%
ours = runs["kexecfw"]
print(ours.read_text("capture/steps/makedumpfile-reads-kexecfw.out") or "")
print((ours.read_text("capture/kexecfw-dump-dmesg.txt") or "").strip().splitlines()[-3:])
print(ours.read_text("host/crash.txt") or "(no crash output recorded)")
