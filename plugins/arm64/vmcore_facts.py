"""The running arm64 kernel's address-space facts a crash dump header needs, without /proc/kallsyms.

Debian's arm64 6.1 kernel has KALLSYMS_ALL=n and does not list ``_text`` in
/proc/kallsyms (kexec-tools 2.0.25 then writes a kernel-text PT_LOAD with
vaddr 0xffffffffffffffff). Everything here comes from the VMCOREINFO note of
proc/kcore and from /proc/iomem:

* ``kimage_voffset`` (NUMBER) maps kernel-image virtual to physical addresses;
  "Kernel code" in iomem starts at ``__pa(_stext)`` on 6.1 and at ``__pa(_text)``
  on 6.12 (arch/arm64/kernel/setup.c, request_standard_resources); "Kernel data"
  ends at ``__pa(_end)``.
* ``KERNELOFFSET`` is ``_text - KIMAGE_VADDR`` and KIMAGE_VADDR is 2 MiB
  aligned, so ``_text = align_down(code - KERNELOFFSET, 2 MiB) + KERNELOFFSET``
  for ``code`` = the virtual start of "Kernel code", either way (TEXT_OFFSET is 0
  since 5.8; ``_stext`` sits less than 2 MiB after ``_text``). VMCOREINFO's
  ``SYMBOL(_stext)`` must then be ``_text`` or lie within those 2 MiB.
  The Image's physical base must be 2 MiB aligned (Documentation/arch/arm64/booting.rst):
  checked.
* The linear map: vaddr = paddr - PHYS_OFFSET + PAGE_OFFSET with
  PAGE_OFFSET = -(1 << VA_BITS) (arch/arm64/include/asm/memory.h; constant
  even when a 52-bit kernel runs on 48-bit hardware, PHYS_OFFSET absorbs the
  difference), checked against ``SYMBOL(mem_section)``, a linear-map pointer.
"""
from __future__ import annotations

from kexecfw.errors import BadInputError
from kexecfw.memory.model import MemoryMap, RegionKind
from kexecfw.memory.ranges import align_down
from kexecfw.records import Record
from kexecfw.running import kallsyms_symbol, read_vmcoreinfo
from kexecfw.sysroot import Sysroot
from kexecfw.plugins.arm64.capture import ARM64_MAX_VA_BITS, ARM64_MIN_VA_BITS, EM_AARCH64
from kexecfw.vmcore.bounds import S64_MIN, U64_MAX, CheckedInfo
from kexecfw.vmcoreinfo import VmcoreInfo

_2M = 2 << 20
_U64 = (1 << 64) - 1


class KernelAddressSpace(Record, frozen=True):
    text_vaddr: int         # _text
    text_paddr: int         # __pa_symbol(_text)
    end_paddr: int          # __pa_symbol(_end)
    kimage_voffset: int
    kernel_offset: int      # KERNELOFFSET (KASLR displacement)
    phys_offset: int        # PHYS_OFFSET (memstart_addr)
    va_bits: int
    page_offset: int        # PAGE_OFFSET, start of the linear map
    text_source: str        # how _text was found, for the plan's log

    @property
    def text_size(self) -> int:
        return self.end_paddr - self.text_paddr

    def linear_vaddr(self, paddr: int) -> int:
        return (paddr - self.phys_offset + self.page_offset) & _U64


def _need(info: CheckedInfo, name: str, sysroot: Sysroot, lo: int = S64_MIN, hi: int = U64_MAX) -> int:
    """NUMBER(name) in [lo, hi] (any 64-bit value by default, as unsigned)."""
    value = info.number(name, lo, hi)
    if value is None:
        raise BadInputError(f"the VMCOREINFO of {sysroot.file('proc/kcore')} lacks NUMBER({name}); "
                            "this arm64 kernel is too old for kexecfw's crash dumps (need 4.19 or later)")
    return value & _U64


def kernel_address_space(sysroot: Sysroot, memmap: MemoryMap, info: VmcoreInfo | None = None) -> KernelAddressSpace:
    info = info or read_vmcoreinfo(sysroot)
    checked = CheckedInfo(info, EM_AARCH64, source=f"the VMCOREINFO of {sysroot.file('proc/kcore')}",
                          verdict="proc/kcore is damaged or not an arm64 kernel's")
    voffset = _need(checked, "kimage_voffset", sysroot)
    phys_offset = _need(checked, "PHYS_OFFSET", sysroot)
    va_bits = _need(checked, "VA_BITS", sysroot, ARM64_MIN_VA_BITS, ARM64_MAX_VA_BITS)
    code = memmap.kernel_code
    if code is None:
        raise BadInputError(f"{memmap.source} has no 'Kernel code' range; take the snapshot as root")
    code_vaddr = (voffset + code.start) & _U64
    kernel_offset = checked.within("KERNELOFFSET", 0, U64_MAX)
    if kernel_offset is not None:
        text = (align_down((code_vaddr - kernel_offset) & _U64, _2M) + kernel_offset) & _U64
        source = "kimage_voffset + 'Kernel code' start, KERNELOFFSET"
    else:
        text = (voffset + align_down(code.start, _2M)) & _U64
        kernel_offset = 0
        source = "kimage_voffset + 'Kernel code' start rounded down to 2 MiB"
    stext = checked.symbol("_stext")
    if stext is not None and not (text <= stext < text + _2M and code_vaddr in (text, stext)):
        raise BadInputError(f"VMCOREINFO SYMBOL(_stext)={stext:#x} does not fit 'Kernel code' at {code.start:#x} "
                            f"(virtual {code_vaddr:#x}): proc/kcore and proc/iomem are from different boots")
    text_paddr = (text - voffset) & _U64
    if text_paddr % _2M or text_paddr > code.start or code.start - text_paddr >= _2M:
        raise BadInputError(f"derived _text at physical {text_paddr:#x} is not the 2 MiB aligned base of "
                            f"'Kernel code' at {code.start:#x}; VMCOREINFO and iomem disagree")
    listed_text = kallsyms_symbol(sysroot, "_text")
    if listed_text is not None and listed_text != text:
        raise BadInputError(f"proc/kallsyms lists _text at {listed_text:#x} but VMCOREINFO and iomem give "
                            f"{text:#x}: the snapshot mixes boots")
    if listed_text is not None:
        source += ", matches kallsyms"
    image_ranges = memmap.ranges(RegionKind.KERNEL_CODE, RegionKind.KERNEL_RODATA, RegionKind.KERNEL_DATA,
                                 RegionKind.KERNEL_BSS)
    end_paddr = max(r.end for r in image_ranges)
    page_offset = (-(1 << va_bits)) & _U64
    space = KernelAddressSpace(text, text_paddr, end_paddr, voffset, kernel_offset, phys_offset, va_bits,
                               page_offset, source)
    _check_linear_map(space, checked, memmap)
    return space


def _check_linear_map(space: KernelAddressSpace, info: CheckedInfo, memmap: MemoryMap) -> None:
    """SYMBOL(mem_section) points into the linear map: its physical address must be System RAM."""
    pointer = info.symbol("mem_section")
    if pointer is None or not space.page_offset <= pointer < (space.page_offset + (1 << (space.va_bits - 1))):
        return      # not a linear-map address (SPARSEMEM_EXTREME off): nothing to check against
    paddr = pointer - space.page_offset + space.phys_offset
    if not any(paddr in r for r in memmap.system_ram):
        raise BadInputError(f"PAGE_OFFSET {space.page_offset:#x} (VA_BITS {space.va_bits}) and PHYS_OFFSET "
                            f"{space.phys_offset:#x} put mem_section at physical {paddr:#x}, outside System RAM")
