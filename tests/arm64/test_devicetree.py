"""The fdt adapter on real device trees (QEMU virt's, from the fixtures) and on blobs made with dtc."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import fdt
import pytest

from kexecfw.errors import BadInputError
from kexecfw.memory.devicetree import (FDT_NOP, FDT_PROP, DeviceTree, decode_cells, encode_cells)
from kexecfw.memory.ranges import Range
from tests.conftest import fixture_path, oracle

SMALL_DTS = """/dts-v1/;
/memreserve/ 0x48000000 0x100000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    reserved-memory {
        #address-cells = <2>;
        #size-cells = <2>;
        ranges;
        fw@bf000000 { reg = <0x0 0xbf000000 0x0 0x200000>; no-map; };
        cma { reg = <0x0 0x60000000 0x0 0x1000000>; reusable; };
        dynamic { size = <0x0 0x100000>; };
    };
    chosen { bootargs = "console=ttyAMA0"; empty-strings = "a", "", "b"; flag; };
    __symbols__ { uart_0 = "/chosen"; };
};
"""


def dtc(args: list[str], data: bytes) -> bytes:
    return subprocess.run([oracle("dtc", "device-tree-compiler"), "-q", *args], input=data, capture_output=True,
                          check=True).stdout


def to_dts(blob: bytes) -> str:
    return dtc(["-I", "dtb", "-O", "dts"], blob).decode()


@pytest.fixture()
def small_dtb() -> bytes:
    return dtc(["-I", "dts", "-O", "dtb"], SMALL_DTS.encode())


@pytest.fixture()
def qemu_dtb() -> bytes:
    return fixture_path("arm64", "sysroot", "sys", "firmware", "fdt").read_bytes()


def test_real_qemu_tree_round_trips_to_the_same_tree(qemu_dtb: bytes) -> None:
    tree = DeviceTree.from_bytes(qemu_dtb)
    out = tree.to_bytes()
    assert len(out) < len(qemu_dtb)            # the 1 MiB sysfs blob is mostly padding; ours is compact
    assert to_dts(out) == to_dts(qemu_dtb)    # dtc sees the same tree
    again = DeviceTree.from_bytes(out)
    assert list(again.walk()) == list(tree.walk())
    assert again.to_bytes() == out


def test_real_qemu_tree_facts(qemu_dtb: bytes) -> None:
    tree = DeviceTree.from_bytes(qemu_dtb)
    assert tree.root_cells == (2, 2)
    assert tree.memory_ranges() == [Range(0x40000000, 0xC0000000)]    # -m 2048 at 1 GiB
    assert tree.get_string("/chosen", "bootargs") == "console=ttyAMA0 crashkernel=384M panic=-1 loglevel=7 "
    assert tree.get("/chosen", "kaslr-seed") == bytes(8)              # zeroed by the first kernel


def test_properties_keep_their_exact_bytes(small_dtb: bytes) -> None:
    # fdt's own parser guesses types and would drop the empty string in the middle.
    tree = DeviceTree.from_bytes(small_dtb)
    assert tree.get("/chosen", "empty-strings") == b"a\0\0b\0"
    assert tree.get("/chosen", "flag") == b""
    assert tree.get_string("/__symbols__", "uart_0") == "/chosen"     # dtc -@ overlay symbols: underscores
    assert DeviceTree.from_bytes(tree.to_bytes()).get("/chosen", "empty-strings") == b"a\0\0b\0"


def test_memreserve_and_reserved_memory(small_dtb: bytes) -> None:
    tree = DeviceTree.from_bytes(small_dtb)
    assert tree.memreserve == [Range(0x48000000, 0x48100000)]
    assert tree.reserved_memory() == [Range(0x60000000, 0x61000000), Range(0xBF000000, 0xBF200000)]
    assert tree.reserved_ranges(include_reusable=False) == [Range(0x48000000, 0x48100000),
                                                            Range(0xBF000000, 0xBF200000)]
    assert "/memreserve/\t0x0000000048000000 0x0000000000100000;" in to_dts(tree.to_bytes())


def test_memreserve_lists_are_not_shared_between_parses(small_dtb: bytes) -> None:
    # fdt.FDT's default entries=[] is one list for every instance: parses pile up there.
    first = DeviceTree.from_bytes(small_dtb)
    second = DeviceTree.from_bytes(small_dtb)
    assert len(first.memreserve) == len(second.memreserve) == 1
    assert first.to_bytes() == second.to_bytes()
    assert to_dts(first.to_bytes()).count("/memreserve/") == 1


def _nop_out_property(blob: bytes, name: str) -> bytes:
    """Overwrite one property with FDT_NOP tags, as libfdt's fdt_nop_property() does."""
    magic, total, off_struct, off_strings, _, _, _, _, size_strings, size_struct = struct.unpack_from(">10I", blob)
    strings = blob[off_strings:off_strings + size_strings]
    nameoff = strings.index(name.encode() + b"\0")
    out = bytearray(blob)
    pos = off_struct
    while pos < off_struct + size_struct:
        (tag,) = struct.unpack_from(">I", blob, pos)
        if tag == FDT_PROP:
            length, off = struct.unpack_from(">II", blob, pos + 4)
            end = pos + 12 + ((length + 3) & ~3)
            if off == nameoff:
                for p in range(pos, end, 4):
                    struct.pack_into(">I", out, p, FDT_NOP)
                return bytes(out)
            pos = end
        elif tag == 1:
            pos = blob.index(b"\0", pos + 4) + 1
            pos = (pos + 3) & ~3
        else:
            pos += 4
    raise AssertionError(f"no property {name}")


def test_nop_tags_are_skipped(qemu_dtb: bytes) -> None:
    blob = _nop_out_property(qemu_dtb, "kaslr-seed")
    with pytest.raises(Exception, match="Unknown Tag"):
        fdt.parse_dtb(blob)                   # the library alone cannot read it
    tree = DeviceTree.from_bytes(blob)
    assert tree.get("/chosen", "kaslr-seed") is None
    assert tree.get_string("/chosen", "stdout-path") == "/pl011@9000000"
    assert "kaslr-seed" not in to_dts(tree.to_bytes())


def test_cells_above_32_bits() -> None:
    assert encode_cells([0x1_2345_6789], 2) == bytes.fromhex("0000000123456789")
    assert decode_cells(bytes.fromhex("0000000123456789"), 2) == [0x1_2345_6789]
    with pytest.raises(BadInputError, match="does not fit in 1"):
        encode_cells([0x1_0000_0000], 1)


def test_set_ranges_uses_root_cells_and_dtc_reads_them(small_dtb: bytes) -> None:
    tree = DeviceTree.from_bytes(small_dtb)
    tree.set_ranges("/chosen", "linux,usable-memory-range", [Range(0x8_A1A0_0000, 0x8_B9A0_0000)])
    tree.set_string("/chosen", "bootargs", "root=/dev/vda")
    assert tree.remove("/chosen", "flag") and not tree.remove("/chosen", "flag")
    dts = to_dts(tree.to_bytes())
    assert "linux,usable-memory-range = <0x08 0xa1a00000 0x00 0x18000000>;" in dts
    assert 'bootargs = "root=/dev/vda";' in dts
    assert "flag;" not in dts
    assert DeviceTree.from_bytes(tree.to_bytes()).get_ranges("/chosen", "linux,usable-memory-range") == \
        [Range(0x8_A1A0_0000, 0x8_B9A0_0000)]


def test_single_cell_trees_get_single_cell_values() -> None:
    blob = dtc(["-I", "dts", "-O", "dtb"], b"/dts-v1/; / { #address-cells = <1>; #size-cells = <1>; chosen { }; };")
    tree = DeviceTree.from_bytes(blob)
    tree.set_ranges("/chosen", "linux,elfcorehdr", [Range(0xB99FF000, 0xB99FF400)])
    assert tree.get("/chosen", "linux,elfcorehdr") == bytes.fromhex("b99ff00000000400")
    with pytest.raises(BadInputError):
        tree.set_ranges("/chosen", "linux,elfcorehdr", [Range(1 << 32, (1 << 32) + 0x400)])


def test_a_huge_cell_count_is_refused_before_any_value_is_sized_by_it(qemu_dtb: bytes) -> None:
    """The real QEMU tree with its root's #address-cells byte changed (the long fuzz campaign's seed:
    0x4000002 cells made every /chosen value written 256 MiB wide, until memory ran out)."""
    blob = bytearray(qemu_dtb)
    blob[0x94] = 0x04                              # the first byte of the root's #address-cells value
    bad = DeviceTree.from_bytes(bytes(blob), "fdt")
    assert bad.get_u32("/", "#address-cells") == 0x4000002
    with pytest.raises(BadInputError, match=r"fdt: / has #address-cells 67108866 .*more than 4 cells"):
        bad.set_ranges("/chosen", "linux,elfcorehdr", [Range(0xB99FF000, 0xB99FF400)])


@pytest.mark.parametrize("blob, message", [
    (b"\xd0\x0d\xfe", "shorter than its header"),
    (bytes(40), "not a device tree"),
])
def test_bad_blobs_give_one_line_errors(blob: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        DeviceTree.from_bytes(blob)


def test_truncated_blob(qemu_dtb: bytes) -> None:
    with pytest.raises(BadInputError, match="truncated"):
        DeviceTree.from_bytes(qemu_dtb[:4096])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read device tree"):
        DeviceTree.from_file(tmp_path / "nope.dtb")
