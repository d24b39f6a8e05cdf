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
from kexecfw.plugins.arm64 import PURGATORY_FILE as ARM64_PURGATORY
from kexecfw.plugins.arm64.relocations import RELOCATION_TYPES as ARM64_RELOCATIONS
from kexecfw.plugins.x86_64 import EM_X86_64
from kexecfw.plugins.x86_64 import PURGATORY_FILE as X86_64_PURGATORY
from kexecfw.plugins.x86_64.relocations import X86_64_RELOCATIONS
from kexecfw.purgatory import PurgatoryLayout
from kexecfw.purgatory.elfrel import ELF64_RELA, ELF64_SHDR, ELF64_SYM, SHT_NOBITS, SHT_RELA, RelocatableElf
from tests.conftest import REPO, fixture_kernel, fixture_path


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
    return request.param, bytearray(Path(PURGATORIES[request.param][0]).read_bytes())


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
    data = bytearray(Path(PURGATORIES[arch][0]).read_bytes())
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
    ("0x0", "0xffffffffffffffff", r"memmap/1: 0x0-0xffffffffffffffff spans all 2\^64 addresses"),
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


# ---- capped decompression and crashkernel estimate ---------------------------------------------------------

def _bomb(codec: str, size: int) -> bytes:
    """``size`` zero bytes compressed with ``codec``, made in pieces (the test never holds them)."""
    import bz2
    import lzma
    import zlib

    import zstandard
    piece = bytes(1 << 20)
    if codec == "zstd":
        c = zstandard.ZstdCompressor(level=1).compressobj()
        return b"".join(c.compress(piece) for _ in range(size >> 20)) + c.flush()
    c = {"gzip": lambda: zlib.compressobj(1, wbits=31), "xz": lambda: lzma.LZMACompressor(preset=0),
         "bzip2": lambda: bz2.BZ2Compressor(1)}[codec]()
    return b"".join(c.compress(piece) for _ in range(size >> 20)) + c.flush()


@pytest.mark.parametrize("codec", ["gzip", "xz", "bzip2", "zstd"])
def test_decompression_stops_at_its_cap(codec: str) -> None:
    from kexecfw.decompress import CHUNK, _chunks, decompress, decompressed_size
    bomb = _bomb(codec, 64 << 20)
    assert len(bomb) < 1 << 20
    with pytest.raises(BadInputError, match=rf"^the payload of vmlinuz decompresses \({codec}\) to more than 8 MiB: "
                                            "not a kernel image"):
        decompress(bomb, codec, 8 << 20, "the payload of vmlinuz")
    assert decompressed_size(bomb, codec, 64 << 20, "initrd") == 64 << 20
    # streaming: no step yields more than a chunk (zstd: at most 32 MiB from its 1 KiB of input)
    assert max(len(c) for c in _chunks(bomb, codec, 64 << 20, "x")) <= (32 << 20 if codec == "zstd" else CHUNK)


def test_lz4_legacy_frame_damaged_or_past_its_cap() -> None:
    """The x86_64 kernel build's lz4 frame (lib/decompress_unlz4.c) built here; a flipped byte in a block
    or an output past the cap is one BadInputError."""
    import lz4.block

    from kexecfw.decompress import LZ4_LEGACY_MAGIC, decompress
    raw = bytes(range(256)) * 40000                   # 10 MB: two blocks of at most 8 MiB
    blocks = [lz4.block.compress(raw[i:i + (8 << 20)], store_size=False) for i in range(0, len(raw), 8 << 20)]
    frame = struct.pack("<I", LZ4_LEGACY_MAGIC) + b"".join(struct.pack("<I", len(b)) + b for b in blocks) \
        + struct.pack("<I", len(raw))
    assert decompress(frame, "lz4", 16 << 20, "vmlinux") == raw
    with pytest.raises(BadInputError, match=r"^vmlinux decompresses \(lz4\) to more than 9 MiB"):
        decompress(frame, "lz4", 9 << 20, "vmlinux")
    damaged = bytearray(frame)
    damaged[8:72] = b"\xff" * 64      # the first block's tokens: literal lengths past its end
    with pytest.raises(BadInputError, match=r"^vmlinux does not decompress as lz4: "):
        decompress(bytes(damaged), "lz4", 16 << 20, "vmlinux")


@pytest.mark.parametrize("codec, fmt, lzma_filter", [("xz", "FORMAT_XZ", "FILTER_LZMA2"),
                                                     ("lzma", "FORMAT_ALONE", "FILTER_LZMA1")])
def test_lzma_dictionary_is_bounded(codec: str, fmt: str, lzma_filter: str) -> None:
    """A stream header asking for a 1 GiB dictionary is refused before liblzma allocates it."""
    import lzma

    from kexecfw.decompress import decompress
    packed = lzma.compress(b"x" * 1000, format=getattr(lzma, fmt),
                           filters=[{"id": getattr(lzma, lzma_filter), "dict_size": 1 << 30}])
    with pytest.raises(BadInputError, match=rf"^initrd does not decompress as {codec}: Memory usage limit"):
        decompress(packed, codec, 1 << 30, "initrd")


def test_zstd_zboot_payload_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An arm64 EFI zboot image whose zstd payload unpacks past the kernel image cap (made 8 MiB here
    to keep the test small; the real one is 512 MiB): refused by name."""
    from kexecfw.plugins.arm64 import image
    monkeypatch.setattr(image, "KERNEL_IMAGE_CAP", 8 << 20)
    payload = _bomb("zstd", 16 << 20)
    header = bytearray(0x40)
    image.ZBOOT_HEADER.pack_into(header, 0, 0x5A4D, b"zimg", len(header), len(payload))
    header[image.ZBOOT_COMP_TYPE_AT:image.ZBOOT_COMP_TYPE_AT + 7] = b"zstd22\0"
    with pytest.raises(BadInputError, match=r"^the zboot payload of vmlinuz.efi decompresses \(zstd\) to more "
                                            r"than 8 MiB: not a kernel image"):
        image.unwrap(bytes(header) + payload, "vmlinuz.efi")


def test_real_caps() -> None:
    from kexecfw.decompress import INITRD_CAP, KERNEL_IMAGE_CAP
    assert (KERNEL_IMAGE_CAP, INITRD_CAP) == (512 << 20, 2 << 30)


@pytest.mark.parametrize("codec", ["gzip", "xz", "zstd"])
def test_damaged_initrd_is_one_line_naming_file_and_codec(tmp_path: Path, codec: str) -> None:
    import gzip
    import lzma

    import zstandard
    cpio = bytes(range(256)) * 4096
    packed = bytearray({"gzip": gzip.compress, "xz": lzma.compress,
                        "zstd": zstandard.ZstdCompressor(write_checksum=True).compress}[codec](cpio))  # as the zstd tool
    packed[len(packed) // 2] ^= 0x55
    initrd = tmp_path / f"initrd.{codec}"
    initrd.write_bytes(packed)
    kernel = _arm64_image(tmp_path)
    line = one_line_error(kexecfw("crashkernel", "estimate", "--kernel", str(kernel), "--initrd", str(initrd)), 3)
    assert f"initrd {initrd} does not decompress as {codec}: " in line


def _arm64_image(tmp_path: Path, image_size: int = 33 << 20) -> Path:
    """A minimal raw arm64 Image: its header with the magic and image_size."""
    from kexecfw.plugins.arm64.image import ARM64_IMAGE_HEADER, ARM64_IMAGE_MAGIC
    kernel = tmp_path / "Image"
    kernel.write_bytes(ARM64_IMAGE_HEADER.pack(0, 0, 0, image_size, 0xA, 0, 0, 0, ARM64_IMAGE_MAGIC, 0) + bytes(4096))
    return kernel


def test_initrd_bomb_is_counted_streaming_up_to_its_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kexecfw import crashkernel
    initrd = tmp_path / "initrd.zst"
    initrd.write_bytes(_bomb("zstd", 64 << 20))
    assert crashkernel.initrd_memory(str(initrd)) == (initrd.stat().st_size, 64 << 20)
    monkeypatch.setattr(crashkernel, "INITRD_CAP", 32 << 20)
    with pytest.raises(BadInputError, match=rf"^initrd {initrd} decompresses \(zstd\) to more than 32 MiB"):
        crashkernel.initrd_memory(str(initrd))


def test_estimate_refuses_a_text_file_as_kernel(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a kernel\n" * 100)
    line = one_line_error(kexecfw("crashkernel", "estimate", "--kernel", str(text)), 3)
    assert f"kernel {text} is not a kernel image kexecfw can size" in line


def test_estimate_names_the_codec_of_a_damaged_compressed_kernel(tmp_path: Path) -> None:
    import gzip
    packed = bytearray(gzip.compress(_arm64_image(tmp_path).read_bytes()))
    packed[12] ^= 0xFF                      # the first byte of the deflate stream
    kernel = tmp_path / "Image.gz"
    kernel.write_bytes(packed)
    line = one_line_error(kexecfw("crashkernel", "estimate", "--kernel", str(kernel)), 3)
    assert f"kernel {kernel} does not decompress as gzip: " in line


def test_estimate_checks_the_kernel_against_arch(tmp_path: Path) -> None:
    kernel = _arm64_image(tmp_path)
    line = one_line_error(kexecfw("crashkernel", "estimate", "--arch", "x86_64", "--kernel", str(kernel)), 3)
    assert f"kernel {kernel} is an arm64 kernel, not x86_64 (--arch x86_64)" in line
    ok = kexecfw("--arch", "arm64", "crashkernel", "estimate", "--kernel", str(kernel))
    assert ok.returncode == 0 and "33.0 MiB  (arm64 Image image_size)" in ok.stdout


def test_estimate_bounds_cpus(tmp_path: Path) -> None:
    line = one_line_error(kexecfw("crashkernel", "estimate", "--kernel", str(_arm64_image(tmp_path)),
                                  "--cpus", "99999999999"), 3)
    assert "--cpus must be 1 to 8192" in line


def test_x86_64_payload_bomb_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real bzImage whose payload is replaced by a zstd stream that unpacks past the cap (8 MiB here)."""

    from kexecfw.plugins.x86_64 import payload
    from kexecfw.plugins.x86_64.bzimage import parse_bzimage
    monkeypatch.setattr(payload, "KERNEL_IMAGE_CAP", 8 << 20)
    image = parse_bzimage(fixture_kernel("x86_64").read_bytes())
    bomb = _bomb("zstd", 16 << 20)
    header = image.header._replace(payload_offset=0, payload_length=len(bomb))
    with pytest.raises(BadInputError, match=r"^the kernel's payload decompresses \(zstd\) to more than 8 MiB"):
        payload.decompress_payload(image._replace(header=header, kernel=bomb))


# ---- the command line: --arch where it is not used, exit codes ----------------------------------------------

@pytest.mark.parametrize("argv, command", [
    (["vmcore", "info", "--arch", "arm64", "X"], "vmcore"),
    (["--arch", "arm64", "vmcore", "info", "X"], "vmcore"),
    (["--arch=x86_64", "vmcore", "dmesg", "X"], "vmcore"),
    (["--arch", "x86_64", "status"], "status"),
    (["--arch", "x86_64", "lab", "run", "--arch", "x86_64"], "lab"),
])
def test_arch_is_refused_where_unused(argv: list[str], command: str) -> None:
    line = one_line_error(kexecfw(*argv), 2)
    assert line.startswith(f"kexecfw: error: --arch does not apply to `{command}`: ")


@pytest.mark.parametrize("argv", [["crashkernel", "parse", "--arch", "arm64"], ["--arch", "arm64", "crashkernel", "parse"]])
def test_crashkernel_parse_uses_arch(argv: list[str]) -> None:
    proc = kexecfw(*argv, "crashkernel=1G,high", "--ram", "4G")
    assert proc.returncode == 0 and "low: 128 MiB (architecture default)" in proc.stdout   # arm64's, not x86_64's 256
    line = one_line_error(kexecfw("crashkernel", "parse", "--arch", "vax", "crashkernel=1G", "--ram", "4G"), 2)
    assert line == "kexecfw: error: --arch vax: crashkernel knows the rules of arm64 and x86_64"


def test_exit_codes_of_failed_writes() -> None:
    import errno

    from kexecfw.errors import ExitCode, exit_code_of
    assert exit_code_of(OSError(errno.EROFS, "Read-only file system")) == ExitCode.PERMISSION == 5
    assert exit_code_of(OSError(errno.EACCES, "Permission denied")) == ExitCode.PERMISSION
    assert exit_code_of(OSError(errno.ENOSPC, "No space left on device")) == ExitCode.NO_SPACE == 4
    assert exit_code_of(OSError(errno.EDQUOT, "Disk quota exceeded")) == ExitCode.NO_SPACE
    assert exit_code_of(OSError(errno.EIO, "Input/output error")) == ExitCode.FAILURE
    for code in ("read-only file system", "EROFS", "ENOSPC", "USAGE"):
        assert code in ExitCode.__doc__
