"""Hostile inputs on the load side: each test mutates a real input (or builds a synthetic one) in a known
way and asserts the one-line error it must give, never a traceback or unbounded growth.

Covers the findings of issue 12 outside the vmcore readers: the purgatory linker, crashkernel estimate's
initrd and kernel, firmware memmap and iomem ranges, CPU lists, human_size, capped decompression and the
CLI's --arch handling.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.plugins.arm64 import EM_AARCH64
from kexecfw.plugins.arm64 import PURGATORY_OBJECT as ARM64_PURGATORY
from kexecfw.plugins.arm64.relocations import RELOCATION_TYPES as ARM64_RELOCATIONS
from kexecfw.plugins.x86_64 import EM_X86_64
from kexecfw.plugins.x86_64 import PURGATORY_OBJECT as X86_64_PURGATORY
from kexecfw.plugins.x86_64.relocations import X86_64_RELOCATIONS
from kexecfw.purgatory import PurgatoryLayout
from kexecfw.purgatory.elfrel import ELF64_RELA, ELF64_SHDR, ELF64_SYM, SHT_NOBITS, SHT_RELA, RelocatableElf
from tests.conftest import REPO, fixture_path


def kexecfw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kexecfw", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def one_line_error(proc: subprocess.CompletedProcess, exit_code: int) -> str:
    """The CLI's single stderr line, after checking its exit code and that nothing else was printed."""
    assert proc.returncode == exit_code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexecfw: error: "), proc.stderr
    return lines[0]

# ---- the purgatory linker ------------------------------------------------------------------------------

PURGATORIES = {
    "x86_64": (X86_64_PURGATORY, EM_X86_64, X86_64_RELOCATIONS, "purgatory_start"),
    "arm64": (ARM64_PURGATORY, EM_AARCH64, ARM64_RELOCATIONS, "purgatory_start"),
}


def _link(arch: str, data: bytes) -> None:
    _, machine, types, entry = PURGATORIES[arch]
    PurgatoryLayout(data, machine).link(0x7000_0000, types, entry)


def _first_rela(data: bytes) -> tuple[int, object, object]:
    """(file offset of the first entry of the first .rela section, that section, its target section)."""
    elf = RelocatableElf(data, "purgatory")
    rela = next(s for s in elf.sections if s.type == SHT_RELA and s.size)
    return rela.offset, rela, elf.sections[rela.info]


def _shdr_offset(data: bytes, index: int) -> int:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    return shoff + index * ELF64_SHDR.size


@pytest.fixture(params=sorted(PURGATORIES))
def purgatory(request: pytest.FixtureRequest) -> tuple[str, bytearray]:
    return request.param, bytearray(PURGATORIES[request.param][0].read_bytes())


def test_real_purgatories_link(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    _link(arch, bytes(data))


def test_relocation_symbol_index_past_the_table(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at, _, target = _first_rela(data)
    offset, info, addend = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, offset, (0xFFFFFF << 32) | (info & 0xFFFFFFFF), addend)
    with pytest.raises(BadInputError, match=rf"in section {target.name} refers to symbol 16777215, "
                                            r"but the symbol table has \d+"):
        _link(arch, bytes(data))


def test_relocation_offset_past_its_section(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at, _, target = _first_rela(data)
    _, info, addend = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, 1 << 63, info, addend)
    with pytest.raises(BadInputError, match=rf"is at offset 0x8000000000000000, past the end of section "
                                            rf"{target.name} \({target.size:#x} bytes\)"):
        _link(arch, bytes(data))


def test_relocation_field_straddling_the_end_of_its_section(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at, _, target = _first_rela(data)
    _, info, addend = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, target.size - 1, info, addend)
    with pytest.raises(BadInputError, match=rf"R_\w+ at 0x[0-9a-f]+: its \d-byte field at offset "
                                            rf"{target.size - 1:#x} runs past the end of its section .*"
                                            rf"\(symbol [^,]+, section {target.name}\)"):
        _link(arch, bytes(data))


@pytest.mark.parametrize("arch, rtype, name", [("x86_64", 10, "R_X86_64_32"), ("arm64", 261, "R_AARCH64_PREL32")])
def test_relocation_result_that_does_not_fit_its_field(arch: str, rtype: int, name: str) -> None:
    data = bytearray(PURGATORIES[arch][0].read_bytes())
    at, _, target = _first_rela(data)
    offset, info, _ = ELF64_RELA.unpack_from(data, at)
    ELF64_RELA.pack_into(data, at, offset, (info >> 32 << 32) | rtype, 1 << 40)
    with pytest.raises(BadInputError, match=rf"^purgatory relocation {name} at 0x[0-9a-f]+.*"
                                            rf"\(symbol [^,]+, section {target.name}\)$"):
        _link(arch, bytes(data))


def test_section_past_the_end_of_the_file(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    at = _shdr_offset(data, 1)
    fields = list(ELF64_SHDR.unpack_from(data, at))
    fields[4] = 0xFFFF_FFFF_FFFF_FF00     # sh_offset
    ELF64_SHDR.pack_into(data, at, *fields)
    with pytest.raises(BadInputError, match=r"is truncated: section 1 ends at 0x1[0-9a-f]{16}, past its"):
        _link(arch, bytes(data))


@pytest.mark.parametrize("field, value, message", [
    (5, 1 << 62, r"sections end at 0x4[0-9a-f]+ with \.bss.*past the 1 MiB a purgatory may take"),
    (8, 3, r"section \.bss\S* has alignment 0x3, not a power of two"),
    (8, 1 << 63, r"alignment 0x8000000000000000, not a power of two up to 0x100000"),
])
def test_huge_bss_or_bad_alignment(purgatory: tuple[str, bytearray], field: int, value: int,
                                   message: str) -> None:
    arch, data = purgatory
    elf = RelocatableElf(bytes(data), "purgatory")
    bss = max((s for s in elf.sections if s.type == SHT_NOBITS), key=lambda s: s.size)
    at = _shdr_offset(data, bss.index)
    fields = list(ELF64_SHDR.unpack_from(data, at))
    fields[field] = value
    ELF64_SHDR.pack_into(data, at, *fields)
    with pytest.raises(BadInputError, match=message):
        _link(arch, bytes(data))


def test_symbol_past_the_end_of_its_section(purgatory: tuple[str, bytearray]) -> None:
    arch, data = purgatory
    elf = RelocatableElf(bytes(data), "purgatory")
    symtab = elf.symtab()
    names = [s.name for s in elf.symbols(symtab)]
    at = symtab.offset + names.index("purgatory_start") * ELF64_SYM.size
    fields = list(ELF64_SYM.unpack_from(data, at))
    fields[4] = 1 << 60       # st_value
    ELF64_SYM.pack_into(data, at, *fields)
    with pytest.raises(BadInputError, match=r"symbol purgatory_start \(0x1000000000000000, \d+ bytes\) lies past "
                                            r"the end of its section \.text"):
        _link(arch, bytes(data))


def test_every_byte_of_the_relocations_and_symbols_mutated(purgatory: tuple[str, bytearray]) -> None:
    """Each byte of the relocation and symbol tables set to 0xFF in turn: linked or refused, nothing else."""
    arch, data = purgatory
    elf = RelocatableElf(bytes(data), "purgatory")
    tables = [s for s in elf.sections if s.type == SHT_RELA] + [elf.symtab()]
    outcomes = {"linked": 0, "refused": 0}
    for table in tables:
        for at in range(table.offset, table.offset + table.size):
            mutated = bytearray(data)
            mutated[at] = 0xFF
            try:
                _link(arch, bytes(mutated))
                outcomes["linked"] += 1
            except KexecfwError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and sum(outcomes.values()) == sum(t.size for t in tables)


# ---- ranges read from a sysroot, CPU lists, sizes ----------------------------------------------------------

@pytest.fixture
def x86_64_sysroot(tmp_path: Path) -> Path:
    root = tmp_path / "sysroot"
    shutil.copytree(fixture_path("x86_64", "sysroot"), root)
    return root


@pytest.mark.parametrize("start, end, words", [
    ("0x9fc00", "0x5", r"memmap/1: ends before it starts \(0x9fc00-0x5\)"),
    ("-0x10", "0x9ffff", r"memmap/1: -0x10-0x9ffff is not a range of 64-bit addresses"),
    ("0x9fc00", "0x10000000000000000", r"memmap/1: 0x9fc00-0x10000000000000000 is not a range of 64-bit"),
])
def test_firmware_memmap_entry_out_of_order_or_range(x86_64_sysroot: Path, start: str, end: str,
                                                     words: str) -> None:
    entry = x86_64_sysroot / "sys/firmware/memmap/1"
    (entry / "start").write_text(start + "\n")
    (entry / "end").write_text(end + "\n")
    line = one_line_error(kexecfw("--sysroot", str(x86_64_sysroot), "memmap"), 3)
    assert __import__("re").search(words, line), line


@pytest.mark.parametrize("bad, words", [
    ("00002000-00001000", "line 3: ends before it starts (0x2000-0x1000)"),
    ("1ffffffffffffffff-2ffffffffffffffff", "line 3: 0x1ffffffffffffffff-0x2ffffffffffffffff is not a range of "
                                            "64-bit addresses"),
])
def test_iomem_line_out_of_order_or_range(x86_64_sysroot: Path, bad: str, words: str) -> None:
    iomem = x86_64_sysroot / "proc/iomem"
    lines = iomem.read_text().splitlines()
    lines[2] = bad + " : Reserved"
    iomem.write_text("\n".join(lines) + "\n")
    assert words in one_line_error(kexecfw("--sysroot", str(x86_64_sysroot), "memmap"), 3)


@pytest.mark.parametrize("text, words", [
    ("0-99999999999", "'0-99999999999' is not a range of CPU numbers 0 to 8191 (the kernel's largest NR_CPUS is 8192)"),
    ("5-2", "'5-2' is not a range of CPU numbers"),
    ("0-3,2", "'2' does not come after CPU 3"),
    ("0-", "'0-' is not N or N-M"),
])
def test_cpu_lists_are_bounded(text: str, words: str) -> None:
    from kexecfw.sysroot import parse_cpu_list
    with pytest.raises(BadInputError) as e:
        parse_cpu_list(text)
    assert words in e.value.message
    assert parse_cpu_list("0-8191")[-1] == 8191 and parse_cpu_list("0-1,4,6-7\n") == [0, 1, 4, 6, 7]


def test_sysroot_cpu_list_past_nr_cpus(x86_64_sysroot: Path) -> None:
    from kexecfw.sysroot import Sysroot
    (x86_64_sysroot / "sys/devices/system/cpu/possible").write_text("0-4294967295\n")
    with pytest.raises(BadInputError, match="not a range of CPU numbers 0 to 8191"):
        Sysroot(x86_64_sysroot).crash_notes()


def test_online_cpus_option_is_bounded(tmp_path: Path) -> None:
    import lzma
    dump = tmp_path / "vmcore.elf"
    dump.write_bytes(lzma.decompress(fixture_path("x86_64", "capture", "vmcore-mini.elf.xz").read_bytes()))
    line = one_line_error(kexecfw("vmcore", "notes", "--online-cpus", "0-99999999999", str(dump)), 3)
    assert "not a range of CPU numbers 0 to 8191" in line


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1536, "1.5 KiB"), (3 << 30, "3 GiB"), ((1 << 64) - 1, "16.0 EiB"),
                                     (1 << 1100, f"{1 << 1040} EiB")])
def test_human_size_of_any_integer(n: int, text: str) -> None:
    from kexecfw.cli.common import human_size
    assert human_size(n) == text
