"""The purgatory linker with the AArch64 formulas, against the GNU linker as the oracle.

The core lays out the object's sections; the same layout is handed to
aarch64-linux-gnu-ld as a linker script, and every loaded byte must match.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from kexecfw.errors import KexecfwError
from kexecfw.plugins.arm64 import PURGATORY_FILE
from kexecfw.plugins.arm64.relocations import RELOCATION_TYPES
from kexecfw.purgatory import PurgatoryLayout
from tests.arm64.conftest import need_tool
from tests.conftest import oracle

EM_AARCH64 = 183
BASE = 0xA3D13000       # where the purgatory went in the fixture's panic plan

# One instruction or datum per relocation type; targets in other sections so gas keeps the relocation.
ALL_TYPES_S = r"""
    .text
    .globl start
start:
    b       far_target                      // R_AARCH64_JUMP26
    bl      far_target                      // R_AARCH64_CALL26
    b.eq    near_target                     // R_AARCH64_CONDBR19
    cbz     x0, near_target                 // R_AARCH64_CONDBR19
    tbz     x0, #3, near_target             // R_AARCH64_TSTBR14
    ldr     x1, near_literal                // R_AARCH64_LD_PREL_LO19
    adr     x2, near_target                 // R_AARCH64_ADR_PREL_LO21
    adrp    x3, data_block                  // R_AARCH64_ADR_PREL_PG_HI21
    adrp    x3, :pg_hi21_nc:data_block      // R_AARCH64_ADR_PREL_PG_HI21_NC
    add     x3, x3, :lo12:data_block + 5    // R_AARCH64_ADD_ABS_LO12_NC
    ldrb    w4, [x3, :lo12:data_block + 3]  // R_AARCH64_LDST8_ABS_LO12_NC
    ldrh    w4, [x3, :lo12:data_block + 6]  // R_AARCH64_LDST16_ABS_LO12_NC
    ldr     w4, [x3, :lo12:data_block + 12] // R_AARCH64_LDST32_ABS_LO12_NC
    ldr     x4, [x3, :lo12:data_block + 24] // R_AARCH64_LDST64_ABS_LO12_NC
    ldr     q4, [x3, :lo12:data_block + 32] // R_AARCH64_LDST128_ABS_LO12_NC
    ret

    .section .text.near, "ax"
near_target:
    nop
near_literal:
    .quad   0

    .section .text.far, "ax"
    .space  0x10000
far_target:
    ret

    .data
    .balign 16
data_block:
    .space  64
    .quad   start + 8                       // R_AARCH64_ABS64
    .word   start + 4                       // R_AARCH64_ABS32
    .word   start - .                       // R_AARCH64_PREL32
    .xword  far_target - .                  // R_AARCH64_PREL64
    .hword  near_target - .                 // R_AARCH64_PREL16
"""


def assemble(tmp_path: Path, source: str) -> bytes:
    gcc = need_tool("aarch64-linux-gnu-gcc")
    (tmp_path / "t.S").write_text(source)
    subprocess.run([gcc, "-c", "t.S", "-o", "t.o"], cwd=tmp_path, check=True, capture_output=True)
    return (tmp_path / "t.o").read_bytes()


def link_with_ld(tmp_path: Path, obj: bytes, layout: PurgatoryLayout, base: int) -> dict[str, bytes]:
    """Link ``obj`` with GNU ld at the core's section offsets; loaded bytes of each output section."""
    ld = oracle("aarch64-linux-gnu-ld", "binutils-aarch64-linux-gnu")
    lines = ["SECTIONS {"]
    names = {}
    for index, offset in sorted(layout.offsets.items(), key=lambda kv: kv[1]):
        section = layout.elf.sections[index]
        if section.size == 0:
            continue        # ld drops empty output sections
        name = section.name
        names[name] = offset
        lines.append(f"  . = {base + offset:#x}; {name} : {{ *({name}) }}")
    lines.append("  /DISCARD/ : { *(.comment) *(.note.GNU-stack) }")
    lines.append("}")
    (tmp_path / "in.o").write_bytes(obj)
    (tmp_path / "link.ld").write_text("\n".join(lines) + "\n")
    subprocess.run([ld, "-T", "link.ld", "-e", "0", "-o", "out.elf", "in.o"], cwd=tmp_path, check=True,
                   capture_output=True)
    out = {}
    with open(tmp_path / "out.elf", "rb") as f:
        elf = ELFFile(f)
        for name, offset in names.items():
            sec = elf.get_section_by_name(name)
            assert sec["sh_addr"] == base + offset, name
            if sec["sh_type"] != "SHT_NOBITS":
                out[name] = sec.data()
    return out


def relocation_types_in(obj: bytes) -> set[int]:
    import io
    elf = ELFFile(io.BytesIO(obj))
    return {rel["r_info_type"] for sec in elf.iter_sections() if isinstance(sec, RelocationSection)
            for rel in sec.iter_relocations()}


def compare_with_ld(tmp_path: Path, obj: bytes, base: int, entry: str = "start") -> int:
    """Link with the core and with GNU ld; every loaded byte must agree. Returns the relocation count."""
    layout = PurgatoryLayout(obj, EM_AARCH64)
    linked = layout.link(base, RELOCATION_TYPES, entry)
    reference = link_with_ld(tmp_path, obj, layout, base)
    for name, data in reference.items():
        index = next(s.index for s in layout.elf.sections if s.name == name)
        offset = layout.offsets[index]
        assert bytes(linked.image[offset:offset + len(data)]) == data, f"{name} differs from GNU ld's"
    return len(linked.relocations)


def test_shipped_purgatory_links_like_gnu_ld(tmp_path: Path) -> None:
    obj = Path(PURGATORY_FILE).read_bytes()
    used = relocation_types_in(obj)
    assert used <= RELOCATION_TYPES.keys()
    assert compare_with_ld(tmp_path, obj, BASE, "purgatory_start") > 0


def test_every_supported_type_links_like_gnu_ld(tmp_path: Path) -> None:
    obj = assemble(tmp_path, ALL_TYPES_S)
    used = relocation_types_in(obj)
    assert used == RELOCATION_TYPES.keys() - {259}, "the test object should use every type but ABS16"
    assert compare_with_ld(tmp_path, obj, BASE) == 20


@pytest.mark.parametrize("base", [0x40000000, 0x8_8000_0000 - 0x800])
def test_other_bases_too(tmp_path: Path, base: int) -> None:
    obj = assemble(tmp_path, ALL_TYPES_S.replace(".word   start + 4", ".word   0"))
    compare_with_ld(tmp_path, obj, base & ~0xFFF)


def test_unknown_relocation_is_refused_by_name(tmp_path: Path) -> None:
    # A GOT-relative load: a position-independent build, which the purgatory must not be.
    obj = assemble(tmp_path, ".text\n.globl purgatory_start\npurgatory_start:\n"
                   "adrp x0, :got:sym\nldr x0, [x0, :got_lo12:sym]\nret\n.data\nsym: .quad 0\n")
    layout = PurgatoryLayout(obj, EM_AARCH64)
    with pytest.raises(KexecfwError, match="R_AARCH64_ADR_GOT_PAGE"):
        layout.link(BASE, RELOCATION_TYPES, "purgatory_start")


def test_out_of_range_branch_is_refused() -> None:
    name, apply = RELOCATION_TYPES[283]
    buf = bytearray((0x94000000).to_bytes(4, "little"))
    apply(buf, 0, 0x1000, 0x1000 + (128 << 20) - 4)      # the farthest forward BL
    assert int.from_bytes(buf, "little") == 0x94000000 | 0x1FFFFFF
    with pytest.raises(KexecfwError, match="R_AARCH64_CALL26 .* out of range"):
        apply(bytearray(4), 0, 0x1000, 0x1000 + (128 << 20))


def test_misaligned_ldst64_is_refused() -> None:
    _, apply = RELOCATION_TYPES[286]
    with pytest.raises(KexecfwError, match="not 8-byte aligned"):
        apply(bytearray(4), 0, 0x1000, 0x2004)
