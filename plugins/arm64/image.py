"""Recognise an arm64 kernel file: a raw Image, a gzip'd Image, an EFI zboot image or a vmlinux ELF.

What gets loaded is always the raw Image; wrappers are opened here. The Image
header is ``struct arm64_image_header`` from arch/arm64/include/asm/image.h,
the zboot header the one of drivers/firmware/efi/libstub/zboot-header.S.
"""
from __future__ import annotations

import struct

from kexecfw.decompress import KERNEL_IMAGE_CAP, decompress
from kexecfw.errors import BadInputError
from kexecfw.elfnotes import ELF64_EHDR, ELF64_PHDR, ELFMAG, PT_LOAD
from kexecfw.flatimage import GZIP_MAGIC, ImageHeader, ProbedImage, check_header, open_image
from kexecfw.plugins.arm64.capture import EM_AARCH64


# struct arm64_image_header: code0, code1 (u32), text_offset, image_size, flags, res2, res3, res4 (u64),
# magic, res5 (u32; res5 is the PE header offset of an EFI-stub kernel), little-endian
ARM64_IMAGE_HEADER = struct.Struct("<IIQQQQQQII")
ARM64_IMAGE_MAGIC = 0x644D5241          # "ARM\x64"
ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT = 1
ARM64_IMAGE_FLAG_PAGE_SIZE_MASK = 0x3
ARM64_IMAGE_FLAG_PHYS_BASE = 1 << 3      # 1: the 2 MiB aligned base may be anywhere in RAM
PAGE_SIZES = {0: None, 1: 4096, 2: 16384, 3: 65536}

# zboot-header.S: "MZ" DOS signature (u32), "zimg", payload offset, payload size, 2 reserved u32,
# then the compression type as a NUL-terminated string
ZBOOT_HEADER = struct.Struct("<I4sII8x")
ZBOOT_COMP_TYPE_AT = 0x18
IMAGE_DOS_SIGNATURE = 0x5A4D

# Kernels stop growing long before this; a bound keeps a bad file from exhausting memory.
MAX_IMAGE = KERNEL_IMAGE_CAP


class Arm64ImageHeader(ImageHeader):
    """pe_header is res5; flags bits 1-2 are the page size, bit 3 the placement rule."""

    @property
    def page_size(self) -> int | None:
        """4096, 16384 or 65536; None when the header does not say (kernels before 3.17)."""
        return PAGE_SIZES[(self.flags >> ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT) & ARM64_IMAGE_FLAG_PAGE_SIZE_MASK]

    @property
    def placement_anywhere(self) -> bool:
        return bool(self.flags & ARM64_IMAGE_FLAG_PHYS_BASE)


def parse_image_header(data: bytes) -> Arm64ImageHeader | None:
    """The header of a raw arm64 Image, or None when ``data`` is not one (no "ARM\\x64" magic at 0x38)."""
    if len(data) < ARM64_IMAGE_HEADER.size:
        return None
    _, _, text_offset, image_size, flags, _, _, _, magic, res5 = ARM64_IMAGE_HEADER.unpack_from(data)
    if magic != ARM64_IMAGE_MAGIC:
        return None
    return Arm64ImageHeader(text_offset, image_size, flags, res5)


def _zboot_payload(data: bytes, what: str) -> tuple[bytes, str]:
    """Decompress an EFI zboot image's payload; returns (Image, compression type)."""
    _, _, offset, size = ZBOOT_HEADER.unpack_from(data)
    end = data.find(b"\0", ZBOOT_COMP_TYPE_AT, ZBOOT_COMP_TYPE_AT + 32)
    comp = data[ZBOOT_COMP_TYPE_AT:end if end > 0 else ZBOOT_COMP_TYPE_AT + 32].decode("ascii", "replace")
    payload = data[offset:offset + size]
    if offset == 0 or len(payload) != size:
        raise BadInputError(f"{what} is an EFI zboot image whose payload ({size} bytes at {offset:#x}) "
                            "lies outside the file; the file is truncated")
    # zboot-header.S's comp_type: the CONFIG_KERNEL_* name, "zstd22" and "xzkern" for the kernel's variants
    codec = "zstd" if comp.startswith("zstd") else "xz" if comp == "xzkern" else comp
    if codec not in ("gzip", "zstd", "lzma", "xz"):
        raise BadInputError(f"{what} is an EFI zboot image compressed with {comp!r}, which kexecfw cannot "
                            "unpack (gzip, zstd, lzma, xz are supported); build the kernel with another "
                            "CONFIG_KERNEL_* compression or pass the plain arch/arm64/boot/Image")
    return decompress(payload, codec, KERNEL_IMAGE_CAP, f"the zboot payload of {what}"), comp


def _vmlinux_image(data: bytes, what: str) -> bytes | None:
    """The Image inside an arm64 vmlinux ELF: its PT_LOAD contents laid out by virtual address from
    the entry point, ``_text`` (arch/arm64/kernel/vmlinux.lds.S: ENTRY(_text)), on: what
    ``objcopy -O binary`` makes. None if ``data`` is an ELF file of another machine."""
    if len(data) < 64:
        return None
    if data[5] == 2:   # ELFDATA2MSB
        machine = int.from_bytes(data[18:20], "big")
        if machine == EM_AARCH64:
            raise BadInputError(f"{what} is a big-endian arm64 vmlinux; this kernel runs little-endian")
        return None
    if data[4] != 2:   # ELFCLASS64
        return None
    (_, _, e_machine, _, e_entry, e_phoff, _, _, _, e_phentsize, e_phnum, _, _, _) = ELF64_EHDR.unpack_from(data)
    if e_machine != EM_AARCH64:
        return None
    if e_phentsize != ELF64_PHDR.size or e_phoff + e_phnum * e_phentsize > len(data):
        raise BadInputError(f"{what} is an arm64 ELF file with truncated or malformed program headers")
    loads = []
    for i in range(e_phnum):
        p = ELF64_PHDR.unpack_from(data, e_phoff + i * e_phentsize)
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = p
        if p_type == PT_LOAD and p_filesz:
            loads.append((p_vaddr, p_offset, p_filesz))
    if not loads:
        raise BadInputError(f"{what} is an arm64 ELF file without loadable segments")
    loads.sort()
    # Start at the entry (_text) when a segment holds it; headers mapped below it are not the Image.
    base = e_entry if any(v <= e_entry < v + n for v, _, n in loads) else loads[0][0]
    loads = [(max(v, base), o + max(base - v, 0), n - max(base - v, 0)) for v, o, n in loads if v + n > base]
    size = max(v + n for v, _, n in loads) - base
    if size > MAX_IMAGE:
        raise BadInputError(f"{what}: its loadable segments span {size >> 20} MiB; is it really a vmlinux?")
    image = bytearray(size)
    for vaddr, offset, filesz in loads:
        chunk = data[offset:offset + filesz]
        if len(chunk) != filesz:
            raise BadInputError(f"{what} is truncated inside a loadable segment")
        image[vaddr - base:vaddr - base + filesz] = chunk
    return bytes(image)


def unwrap(data: bytes, what: str) -> ProbedImage[Arm64ImageHeader] | None:
    """Open ``data`` down to a raw Image. None if it is not an arm64 kernel in a form we know.

    A raw Image's payload is ``data`` itself (a view of the mapped file in a load, kexecfw.load); the
    other forms are unpacked from bytes."""
    if parse_image_header(data) is None:
        data = bytes(data)
    probed = open_image(data, what, parse_image_header, "arm64")
    if probed is not None or data[:2] == GZIP_MAGIC:
        return probed
    if len(data) >= ZBOOT_HEADER.size + 32:
        dos, kind, _, _ = ZBOOT_HEADER.unpack_from(data)
        if dos & 0xFFFF == IMAGE_DOS_SIGNATURE and kind == b"zimg":
            inner, comp = _zboot_payload(data, what)
            header = parse_image_header(inner)
            if header is None:
                raise BadInputError(f"{what} is an EFI zboot image whose payload is not an arm64 Image "
                                    "(another architecture's zboot kernel?)")
            return ProbedImage(header, inner, f"EFI zboot ({comp}) arm64 Image")
        if data[:2] == b"MZ":
            return None     # a PE file without the arm64 Image header: a UKI or another EFI binary
    if data[:4] == ELFMAG:
        inner = _vmlinux_image(data, what)
        if inner is None:
            return None
        header = parse_image_header(inner)
        if header is None:
            raise BadInputError(f"{what} is an arm64 ELF file but not a kernel vmlinux "
                                "(no arm64 Image header at its first loadable byte)")
        return ProbedImage(header, inner, "vmlinux ELF")
    return None


# include/linux/pe.h: struct mz_hdr keeps the PE header offset (peaddr) at 0x3c; struct pe_hdr: magic,
# machine, sections, timestamp, symbol_table, symbols, opt_hdr_size, flags; struct section_header: name[8],
# virtual_size, virtual_address, raw_data_size, data_addr, relocs, line_numbers, num_relocs,
# num_lin_numbers, flags.
MZ_PEADDR_AT = 0x3C
PE_HDR = struct.Struct("<IHHIIIHH")
PE_SECTION_HEADER = struct.Struct("<8sIIIIIIHHI")
PE_MAGIC = 0x00004550       # "PE\0\0"


def is_uki(data: bytes) -> bool:
    """A Unified Kernel Image: a PE file with a ``.linux`` section (systemd-stub)."""
    if data[:2] != b"MZ" or len(data) < MZ_PEADDR_AT + 4:
        return False
    (pe,) = struct.unpack_from("<I", data, MZ_PEADDR_AT)
    if len(data) < pe + PE_HDR.size:
        return False
    magic, _, nsections, _, _, _, opt_size, _ = PE_HDR.unpack_from(data, pe)
    table = pe + PE_HDR.size + opt_size
    if magic != PE_MAGIC or len(data) < table + nsections * PE_SECTION_HEADER.size:
        return False
    names = (PE_SECTION_HEADER.unpack_from(data, table + i * PE_SECTION_HEADER.size)[0] for i in range(nsections))
    return any(name.rstrip(b"\0") == b".linux" for name in names)


def check_loadable(header: Arm64ImageHeader, what: str, running_page_size: int) -> None:
    """The checks the kernel's arm64 image loader makes (arch/arm64/kernel/kexec_image.c), and ours."""
    check_header(header, what, "arm64", no_size_hint=" (a kernel older than 3.17)")
    page = header.page_size
    if page is not None and page != running_page_size:
        raise BadInputError(f"{what} is built for {page // 1024} KiB pages but the running kernel uses "
                            f"{running_page_size // 1024} KiB pages; kexecfw cannot tell whether this CPU "
                            f"supports the {page // 1024} KiB granule: load a {running_page_size // 1024} KiB "
                            "page kernel")
