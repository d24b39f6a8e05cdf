"""The elfcorehdr's facts from the real guest's VMCOREINFO and iomem, and each refusal from one value
rewritten (VMCOREINFO through the core's CheckedInfo bounds; iomem and kcore from different boots)."""
from __future__ import annotations

import pytest

from kexecfw.errors import BadInputError
from kexecfw.memory.devicetree import DeviceTree
from kexecfw.memory.iomem import parse_iomem, read_iomem
from kexecfw.memory.ranges import Range
from kexecfw.running import read_vmcoreinfo
from kexecfw.plugins.riscv64.vmcore_facts import address_space, dump_ranges, firmware_ranges
from kexecfw.vmcoreinfo import VmcoreInfo


def _info(snapshot, **changes: str | None) -> VmcoreInfo:
    raw = dict(read_vmcoreinfo(snapshot).raw)
    for key, value in changes.items():
        if value is None:
            raw.pop(f"NUMBER({key})")
        else:
            raw[f"NUMBER({key})"] = value
    return VmcoreInfo(raw)


def test_guest(snapshot):
    space = address_space(snapshot, read_iomem(snapshot), _info(snapshot))
    assert (space.va_bits, space.page_offset, space.phys_ram_base) == (57, 0xFF60000000000000, 0x80000000)
    assert space.text_vaddr == 0xFFFFFFFF80002000 and space.image == Range(0x80202000, 0x8206B3F8)
    tree = DeviceTree.from_bytes(snapshot.read_bytes("sys/firmware/fdt"))
    assert firmware_ranges(tree) == [Range(0x80000000, 0x80080000)]        # OpenSBI's mmode_resv0


@pytest.mark.parametrize("changes,words", [
    ({"VA_BITS": "47"}, "none of Sv39/Sv48/Sv57"),
    ({"VA_BITS": "99"}, r"NUMBER\(VA_BITS\)=99 is not plausible"),
    ({"phys_ram_base": None}, r"lacks NUMBER\(phys_ram_base\): this riscv kernel is too old"),
    ({"phys_ram_base": "0x80000000x"}, "is not a number"),
    ({"phys_ram_base": str(0x90000000)}, "lies above System RAM"),
    ({"PAGE_OFFSET": "0x7f60000000000000"}, "below the kernel half"),
    ({"va_kernel_pa_offset": "0x1000"}, "outside the kernel mapping at KERNEL_LINK_ADDR"),
    ({"KERNEL_LINK_ADDR": None}, r"lacks NUMBER\(KERNEL_LINK_ADDR\)"),
])
def test_refusals(snapshot, changes, words):
    with pytest.raises(BadInputError, match=words):
        address_space(snapshot, read_iomem(snapshot), _info(snapshot, **changes))


def test_iomem_without_kernel_image(snapshot):
    text = "\n".join(line for line in snapshot.read_text("proc/iomem").splitlines() if "Kernel" not in line)
    with pytest.raises(BadInputError, match="no 'Kernel image' or 'Kernel code' range"):
        address_space(snapshot, parse_iomem(text), _info(snapshot))


def test_top_level_reserved_in_ram_is_dumped(snapshot):
    """memblock nomap memory is listed beside System RAM: dumped when it lies in the RAM's span."""
    iomem = ("80000000-8007ffff : Reserved\n80080000-bfffffff : System RAM\n"
             "  80202000-8206b3f7 : Kernel image\n  acc00000-bcbfffff : Crash kernel\n"
             "c0000000-c0000fff : Reserved\n")
    memmap = parse_iomem(iomem)
    space = address_space(snapshot, memmap, _info(snapshot))
    assert dump_ranges(memmap, space, []) == [Range(0x80000000, 0xACC00000), Range(0xBCC00000, 0xC0000000)]
