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
# # 04 · Port kexecfw to a new architecture
#
# An architecture is a pluggy plugin: a module or object whose `@kexecfw.hookimpl` functions are named
# after the hooks in `kexecfw/hookspecs.py`. The core calls them in a fixed order and does everything
# generic itself: memory maps and holes, the kernel's segment rules, the elfcorehdr, linking the
# purgatory, the syscalls. Here we write a **partial riscv64 port** in a few cells, register it, and
# watch the core call it. At the end: what a real port still needs.

# %%
# %matplotlib inline
import inspect

import kexecfw.hookspecs as hookspecs

for name in [n for n in dir(hookspecs) if n.startswith("kexecfw_")]:
    spec = getattr(hookspecs, name)
    first = inspect.getdoc(spec).splitlines()[0]
    firstresult = spec.kexecfw_spec.get("firstresult", False)
    print(f"{name:<28} {'firstresult' if firstresult else 'all plugins':<12} {first}")

# %% [markdown]
# ## A riscv64 machine to plan for
# We have no riscv64 snapshot, so we write one by hand: the `/proc/iomem` of a QEMU `virt` machine with
# 1 GiB of RAM at 0x80000000 and `crashkernel=256M`, and its device tree compiled with `dtc`. Every
# reader in kexecfw takes such a *sysroot* directory.

# %%
import subprocess
import tempfile
from pathlib import Path

root = Path(tempfile.mkdtemp()) / "riscv64-virt"
(root / "proc").mkdir(parents=True)
(root / "sys/firmware").mkdir(parents=True)
(root / "proc/iomem").write_text("""\
00101000-00101fff : goldfish_rtc
10000000-10000007 : serial
80000000-801fffff : Reserved
80200000-bfffffff : System RAM
  80c00000-81a3ffff : Kernel image
    80c00000-8154c5ff : Kernel code
  a0000000-afffffff : Crash kernel
""")
(root / "proc/cmdline").write_text("root=/dev/vda console=ttyS0 crashkernel=256M\n")
dts = """/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    compatible = "riscv-virtio"; model = "riscv-virtio,qemu";
    chosen { bootargs = "root=/dev/vda console=ttyS0 crashkernel=256M"; stdout-path = "/soc/serial@10000000"; };
    memory@80000000 { device_type = "memory"; reg = <0x0 0x80000000 0x0 0x40000000>; };
    soc { serial@10000000 { compatible = "ns16550a"; reg = <0x0 0x10000000 0x0 0x100>; }; };
};
"""
(root / "sys/firmware/fdt").write_bytes(
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb"], input=dts.encode(), capture_output=True, check=True).stdout)
sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

# %% [markdown]
# ## The plugin
# Four hooks are enough to *plan* a normal load: say which architecture we serve, recognise its kernel
# image, place the kernel, and build the boot parameters (on riscv64, like arm64: a DTB whose `/chosen`
# carries the command line and the initrd). The RISC-V Image header is documented in the kernel's
# `Documentation/arch/riscv/boot-image-header.rst`.

# %%
import struct

from kexecfw import hookimpl
from kexecfw.errors import BadInputError
from kexecfw.memory.devicetree import DeviceTree, encode_cells
from kexecfw.model import ArchSpec, KernelImage

# struct riscv_image_header: code0, code1 (u32), text_offset, image_size, flags (u64), version (u32),
# res1 (u32), res2 (u64), magic (u64, "RISCV\0\0\0"), magic2 (u32, "RSC\x05"), res3 (u32)
RISCV_IMAGE_HEADER = struct.Struct("<IIQQQIIQ8s4sI")
EM_RISCV = 243


class RiscV64:
    arch = ArchSpec(name="riscv64", aliases=("riscv",), elf_machine=EM_RISCV,
                    nr_kexec_load=104, nr_kexec_file_load=294, nr_reboot=142, uname_machines=("riscv64",))

    @hookimpl
    def kexecfw_architectures(self):
        return [self.arch]

    @hookimpl
    def kexecfw_probe_kernel(self, ctx, kernel_file):
        if ctx.arch.name != "riscv64":
            return None
        data = kernel_file.data
        if len(data) < RISCV_IMAGE_HEADER.size:
            raise BadInputError(f"{kernel_file.path} is too short for a RISC-V Image header")
        (_, _, text_offset, image_size, flags, version, _, _, magic, magic2, _) = RISCV_IMAGE_HEADER.unpack_from(data)
        if magic2 != b"RSC\x05":
            return None
        return KernelImage("riscv64", "riscv64 Image", data,
                           {"text_offset": text_offset, "image_size": image_size, "version": version >> 16})

    @hookimpl
    def kexecfw_place_kernel(self, ctx, planner):
        if ctx.arch.name != "riscv64":
            return None
        image = ctx.kernel
        # The kernel must sit 2 MiB aligned (PMD_SIZE) and gets image_size bytes (bss included).
        seg = planner.add("kernel", image.payload, memsz=image.details["image_size"], align=2 << 20)
        return seg.mem

    @hookimpl
    def kexecfw_boot_params(self, ctx, planner, kernel_entry):
        if ctx.arch.name != "riscv64":
            return None
        tree = DeviceTree.from_bytes(ctx.sysroot.read_bytes("sys/firmware/fdt"), "riscv64 fdt")
        tree.set_string("/chosen", "bootargs", ctx.cmdline)
        initrd = planner.get("initrd")
        addr_cells, _ = tree.root_cells
        for name in ("linux,initrd-start", "linux,initrd-end"):
            tree.remove("/chosen", name)
        if initrd is not None:
            tree.set("/chosen", "linux,initrd-start", encode_cells([initrd.mem], addr_cells))
            tree.set("/chosen", "linux,initrd-end", encode_cells([initrd.mem + initrd.bufsz], addr_cells))
        planner.add("dtb", tree.to_bytes(), min_addr=planner.segments[-1].range.end)
        return True

# %% [markdown]
# ## Register it and watch the core call it
# `new_plugin_manager(extra=[...])` registers our object next to the built-in arm64 and x86_64 plugins
# (an installed package would use the `kexecfw` entry-point group instead). `HookRecorder` records
# every hook call: which plugins implement it, and what came back.

# %%
from kexecfw.load import plan_load
from kexecfw.model import LoadOptions
from kexecfw.pluginmanager import HookRecorder, Hooks, describe_plugins, new_plugin_manager
from kexecfw.sysroot import Sysroot

pm = new_plugin_manager(extra=[RiscV64()], entry_points=False)
print([(p["name"], p["architectures"]) for p in describe_plugins(pm)])

# A riscv64 kernel for the demo: a valid Image header over 3 MiB of filler (not bootable; the plan is real).
header = RISCV_IMAGE_HEADER.pack(0, 0, 0x200000, 0x1400000, 0, 2 << 16, 0, 0, b"RISCV\0\0\0", b"RSC\x05", 0)
kernel = root / "Image"
kernel.write_bytes(header + bytes(3 << 20))
initrd = root / "initrd.img"
initrd.write_bytes(bytes(5 << 20))

with HookRecorder(pm) as rec:
    plan, ctx = plan_load(LoadOptions(kernel=kernel, initrd=initrd, cmdline="root=/dev/vda console=ttyS0"),
                          Sysroot(root), arch="riscv64", hooks=Hooks(pm))
for call in rec.calls:
    result = type(call.result).__name__
    print(f"{call.hook:<26} implemented by {', '.join(call.implementers) or '-':<28} -> {result}")

# %% [markdown]
# The core's default placed the initrd (we did not implement `kexecfw_place_initrd`), validated the
# plan against the kernel's rules (alignment, overlaps, half of RAM ...), and we get the same plan
# object `kexecfw load --dry-run` prints:

# %%
from kexecfw.cli.load import format_plan
from kexecfw.viz.render import draw_memmap

print(format_plan(plan, ctx))
draw_memmap(ctx.memmap, plan=plan, title="riscv64: a normal load planned by a notebook plugin")

# %% [markdown]
# The DTB really carries our `/chosen`:

# %%
dtb = DeviceTree.from_bytes(plan.segment("dtb").buf, "planned dtb")
{name: (value.rstrip(b"\0").decode() if name == "bootargs" else f"{int.from_bytes(value, 'big'):#x}")
 for name, value in dtb.properties("/chosen").items() if name != "stdout-path"}

# %% [markdown]
# ## What a real port still needs
# A panic load asks for more hooks, and the core says so in one line instead of guessing:

# %%
from kexecfw.errors import KexecfwError

try:
    plan_load(LoadOptions(kernel=kernel, initrd=initrd, cmdline="console=ttyS0", panic=True),
              Sysroot(root), arch="riscv64", hooks=Hooks(pm))
except KexecfwError as e:
    print("kexecfw:", e.message)

# %% [markdown]
# To finish the port:
#
# 1. **Purgatory** — `kexecfw_purgatory` and `kexecfw_relocation_types`: an entry in assembly that sets
#    `a0` = hart id and `a1` = DTB and jumps to the kernel, the shared sha256 check
#    (`kexecfw/purgatory/verify.c`), built with `riscv64-linux-gnu-gcc`, and the R_RISCV_* relocations it
#    emits (HI20/LO12, CALL, PCREL, RELAX hints). Without it the kernel is entered unchecked.
# 2. **elfcorehdr** — `kexecfw_elfcore_info`: the kernel text's virtual address and `PAGE_OFFSET` from
#    VMCOREINFO in /proc/kcore, plus `/chosen` `linux,elfcorehdr` and `linux,usable-memory-range`.
# 3. **Capture side** — `kexecfw_prstatus_registers` for `struct user_regs_struct` (pc, ra, sp, ...).
# 4. **Proof** — a lab target (qemu-system-riscv64, a Debian riscv64 kernel) so `python -m kexecfw lab run`
#    boots, crashes and captures it, as it does for arm64 and x86_64.
