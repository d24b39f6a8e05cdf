"""The running riscv64 kernel's address space, for the elfcorehdr: VMCOREINFO of proc/kcore and /proc/iomem.

arch/riscv/kernel/vmcore_info.c writes ``NUMBER(phys_ram_base)`` (decimal: VMCOREINFO_NUMBER),
``NUMBER(PAGE_OFFSET)``, ``NUMBER(VA_BITS)`` (39, 48 or 57: Sv39/Sv48/Sv57, chosen at boot),
``NUMBER(KERNEL_LINK_ADDR)`` and ``NUMBER(va_kernel_pa_offset)`` (hex). Then
(arch/riscv/include/asm/page.h):

* linear map: ``va = pa - phys_ram_base + PAGE_OFFSET`` for the RAM PT_LOADs;
* kernel image: ``va = pa + va_kernel_pa_offset``; "Kernel image" in iomem is
  ``__pa_symbol(_start)`` .. ``__pa_symbol(_end)`` (arch/riscv/kernel/setup.c, init_resources),
  so the kernel-image PT_LOAD needs no kallsyms.

What to dump: all of System RAM outside the crash region, including the "Reserved" ranges
iomem nests inside it. Those are memblock reservations (arch/riscv/kernel/setup.c,
init_resources): the DTB, early page tables, per-CPU areas, and ``mem_section``, which
makedumpfile needs first. kexec-tools 2.0.32 leaves them out, and trixie's makedumpfile then
fails ("Can't read mem_section array"). A top-level "Reserved" (memblock nomap memory, listed
beside System RAM) between phys_ram_base and the end of RAM is in the linear map and dumped too.
Left out: M-mode firmware memory. OpenSBI protects its own memory with PMP and publishes it as
/reserved-memory/mmode_resv* in the device tree (lib/utils/fdt/fdt_fixup.c; ``no-map`` only in
newer versions): any S-mode access faults, so a capture kernel's read() of it fails with EFAULT
and a makedumpfile that mmap()s /proc/vmcore dies of SIGSEGV (both seen in the lab). Regions
marked ``no-map`` are left out for the same reason.
"""
from __future__ import annotations

from kexecfw.errors import BadInputError
from kexecfw.memory.devicetree import DeviceTree
from kexecfw.memory.model import MemoryMap, RegionKind
from kexecfw.memory.ranges import Range, merge, subtract
from kexecfw.records import Record
from kexecfw.sysroot import Sysroot
from kexecfw.vmcore.bounds import EM_RISCV, U64_MAX, CheckedInfo
from kexecfw.vmcoreinfo import VmcoreInfo

_U64 = (1 << 64) - 1
SV_MODES = (39, 48, 57)
KERNEL_IMAGE = "Kernel image"
# the kernel is linked in the top 2 GiB (KERNEL_LINK_ADDR = ADDRESS_SPACE_END - SZ_2G + 1)
KERNEL_MAPPING_SIZE = 2 << 30


class RiscvAddressSpace(Record, frozen=True):
    page_offset: int        # PAGE_OFFSET: start of the linear map
    va_bits: int            # 39, 48, 57
    phys_ram_base: int      # physical address at PAGE_OFFSET
    va_kernel_pa_offset: int
    kernel_link_addr: int
    image: Range            # the kernel image, physical (iomem "Kernel image")

    @property
    def text_vaddr(self) -> int:
        return (self.image.start + self.va_kernel_pa_offset) & _U64

    def linear_vaddr(self, paddr: int) -> int:
        return (paddr - self.phys_ram_base + self.page_offset) & _U64


TOO_OLD = "this riscv kernel is too old for kexecfw's crash dumps (need 6.1 or later)"


def _need(info: CheckedInfo, name: str, lo: int = 0, hi: int = U64_MAX) -> int:
    return info.need_number(name, lo, hi, TOO_OLD) & _U64


def kernel_image_range(memmap: MemoryMap) -> Range:
    """iomem's "Kernel image" (riscv: _start.._end), else its "Kernel code".."Kernel bss" children."""
    named = [r.range for r in memmap.regions if r.name == KERNEL_IMAGE]
    if named:
        return named[0]
    parts = memmap.ranges(RegionKind.KERNEL_CODE, RegionKind.KERNEL_RODATA, RegionKind.KERNEL_DATA,
                          RegionKind.KERNEL_BSS)
    if not parts:
        raise BadInputError(f"{memmap.source} has no 'Kernel image' or 'Kernel code' range; take the "
                            "snapshot as root")
    return Range(min(r.start for r in parts), max(r.end for r in parts))


def address_space(sysroot: Sysroot, memmap: MemoryMap, info: VmcoreInfo) -> RiscvAddressSpace:
    source = f"the VMCOREINFO of {sysroot.file('proc/kcore')}"
    checked = CheckedInfo(info, EM_RISCV, source=source, verdict="proc/kcore is damaged or not a riscv64 kernel's")
    va_bits = _need(checked, "VA_BITS", min(SV_MODES), max(SV_MODES))
    if va_bits not in SV_MODES:
        raise BadInputError(f"{source} NUMBER(VA_BITS)={va_bits} is none of Sv39/Sv48/Sv57's 39, 48, 57")
    page_offset = _need(checked, "PAGE_OFFSET", -(1 << 63), U64_MAX)
    if page_offset < (-(1 << (va_bits - 1))) & _U64:
        raise BadInputError(f"{source} NUMBER(PAGE_OFFSET)={page_offset:#x} is below the kernel half of a "
                            f"{va_bits}-bit address space: proc/kcore is damaged")
    phys_ram_base = checked.phys("phys_ram_base", why=TOO_OLD)
    voffset = _need(checked, "va_kernel_pa_offset", -(1 << 63), U64_MAX)
    link = _need(checked, "KERNEL_LINK_ADDR", -(1 << 63), U64_MAX)
    image = kernel_image_range(memmap)
    space = RiscvAddressSpace(page_offset, va_bits, phys_ram_base, voffset, link, image)
    if not link <= space.text_vaddr < link + KERNEL_MAPPING_SIZE:
        raise BadInputError(f"'Kernel image' at physical {image.start:#x} + va_kernel_pa_offset {voffset:#x} "
                            f"is {space.text_vaddr:#x}, outside the kernel mapping at KERNEL_LINK_ADDR "
                            f"{link:#x}: proc/kcore and proc/iomem are from different boots")
    ram = memmap.system_ram
    if ram and phys_ram_base > min(r.start for r in ram):
        raise BadInputError(f"{source} NUMBER(phys_ram_base)={phys_ram_base:#x} lies above System RAM at "
                            f"{min(r.start for r in ram):#x}: proc/kcore and proc/iomem are from different boots")
    _check_linear_map(space, checked, memmap)
    return space


def _check_linear_map(space: RiscvAddressSpace, info: CheckedInfo, memmap: MemoryMap) -> None:
    """SYMBOL(mem_section) points into the linear map (SPARSEMEM_EXTREME): it must land in System RAM."""
    pointer = info.symbol("mem_section")
    if pointer is None or not space.page_offset <= pointer < space.kernel_link_addr:
        return
    paddr = pointer - space.page_offset + space.phys_ram_base
    if not any(paddr in r for r in memmap.system_ram):
        raise BadInputError(f"PAGE_OFFSET {space.page_offset:#x} and phys_ram_base {space.phys_ram_base:#x} put "
                            f"mem_section at physical {paddr:#x}, outside System RAM")


FIRMWARE_NODE_PREFIX = "mmode_resv"        # OpenSBI's PMP-protected regions


def firmware_ranges(tree: DeviceTree) -> list[Range]:
    """/reserved-memory children the kernel cannot read: OpenSBI's mmode_resv* and any ``no-map``."""
    out: list[Range] = []
    for name in tree.node_names("/reserved-memory"):
        path = f"/reserved-memory/{name}"
        reg = tree.get(path, "reg")
        if reg is not None and (name.startswith(FIRMWARE_NODE_PREFIX) or tree.get(path, "no-map") is not None):
            out.extend(tree.decode_ranges(reg, "/reserved-memory"))
    return merge(out)


def dump_ranges(memmap: MemoryMap, space: RiscvAddressSpace, firmware: list[Range]) -> list[Range]:
    """System RAM and the top-level "Reserved" memory between phys_ram_base and its end, minus the
    crash regions and the ``firmware`` ranges: the linear map the crashed kernel could read."""
    ram = memmap.system_ram
    if not ram:
        raise BadInputError(f"{memmap.source} has no System RAM")
    end = max(r.end for r in ram)
    reserved = [r.range for r in memmap.of_kind(RegionKind.RESERVED)
                if r.depth == 0 and space.phys_ram_base <= r.start and r.end <= end]
    return subtract(merge(ram + reserved), merge(memmap.crash_regions + firmware))
