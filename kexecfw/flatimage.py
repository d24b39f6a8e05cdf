"""Kernels loaded as a flat Image whose header gives ``text_offset`` and ``image_size`` (arm64, riscv64).

riscv's ``struct riscv_image_header`` (arch/riscv/include/asm/image.h) copies arm64's
``struct arm64_image_header`` (arch/arm64/include/asm/image.h) where it matters here: ``text_offset``
and ``image_size`` (u64 at 8 and 16), ``flags`` (u64 at 24, bit 0 = big-endian kernel), and the PE
header's offset in the last u32 of an EFI-stub kernel. Both want the Image ``text_offset`` bytes
above a 2 MiB aligned base with ``image_size`` bytes there (BSS and early page tables included):
Documentation/arch/arm64/booting.rst, Documentation/arch/riscv/boot.rst. Each plugin parses its own
header (the magic, the flags bits and version fields that differ) into a subclass of
:class:`ImageHeader`; what they share is checked and placed here.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from kexecfw.decompress import KERNEL_IMAGE_CAP, decompress
from kexecfw.errors import BadInputError, NoSpaceError
from kexecfw.memory.holes import find_hole
from kexecfw.model import LoadContext
from kexecfw.records import Record
from kexecfw.segments.planner import Planner

KERNEL_ALIGN = 2 << 20
GZIP_MAGIC = b"\x1f\x8b"
IMAGE_FLAG_BE = 1 << 0
TEXT_OFFSET_ALIGN = 4096


class ImageHeader(Record, frozen=True):
    text_offset: int
    image_size: int
    flags: int
    pe_header: int          # offset of the PE header of an EFI-stub kernel, else 0

    @property
    def big_endian(self) -> bool:
        return bool(self.flags & IMAGE_FLAG_BE)

    @property
    def efi_stub(self) -> bool:
        return self.pe_header != 0


Header = TypeVar("Header", bound=ImageHeader)


class ProbedImage(Record, Generic[Header]):
    header: Header
    payload: bytes
    format: str             # "arm64 Image", "gzip riscv64 Image", ...


def open_image(data: bytes, what: str, parse: Callable[[bytes], Header | None], arch: str) -> ProbedImage[Header] | None:
    """``data`` as a plain Image ("<arch> Image") or a gzip'd one (Image.gz, "gzip <arch> Image"), its
    header read by the plugin's ``parse``; None when it is neither (or a gzip file of something else)."""
    header = parse(data)
    if header is not None:
        return ProbedImage(header, data, f"{arch} Image")
    if data[:2] == GZIP_MAGIC:
        inner = decompress(data, "gzip", KERNEL_IMAGE_CAP, what)
        header = parse(inner)
        return ProbedImage(header, inner, f"gzip {arch} Image") if header else None
    return None


def check_header(header: ImageHeader, what: str, arch: str, *, no_size_hint: str = "") -> None:
    """Refuse a header whose kernel cannot be placed: big-endian, ``image_size`` 0 (``no_size_hint`` says
    why a kernel might have that) or beyond any kernel, ``text_offset`` unaligned or beyond any kernel."""
    if header.big_endian:
        raise BadInputError(f"{what} is a big-endian {arch} kernel; the running kernel is little-endian and "
                            "kexec cannot switch endianness: use a little-endian build")
    if header.image_size == 0:
        raise BadInputError(f"{what} has image_size 0 in its header{no_size_hint}; its memory footprint is "
                            "unknown, so it cannot be placed safely")
    if header.image_size > KERNEL_IMAGE_CAP:
        raise BadInputError(f"{what}: image_size {header.image_size:#x} in its header is more than a kernel "
                            f"takes ({KERNEL_IMAGE_CAP:#x} at most): the header is corrupt")
    if header.text_offset % TEXT_OFFSET_ALIGN or header.text_offset >= KERNEL_IMAGE_CAP:
        raise BadInputError(f"{what}: text_offset {header.text_offset:#x} is not a plausible page-aligned "
                            "offset; the header is corrupt")


def place_kernel(ctx: LoadContext, planner: Planner) -> int:
    """The Image at the lowest 2 MiB aligned base that fits ``text_offset`` + ``image_size``; its load address.
    For a panic load the planner only offers the crash region."""
    assert ctx.kernel is not None
    text_offset = ctx.kernel.details["text_offset"]
    image_size = ctx.kernel.details["image_size"]
    payload = ctx.kernel.payload
    memsz = max(image_size, len(payload))
    base = find_hole(planner.free, text_offset + memsz, align=KERNEL_ALIGN)
    if base is None:
        raise NoSpaceError(f"no 2 MiB aligned {(text_offset + memsz) / (1 << 20):.1f} MiB hole for the kernel "
                           f"in {planner.what}; reserve more memory (e.g. a larger crashkernel=)")
    seg = planner.add_at("kernel", payload, base + text_offset, memsz=memsz)
    ctx.note(f"kernel at {seg.mem:#x} (2 MiB aligned base {base:#x} + text_offset {text_offset:#x}), "
             f"image_size {image_size:#x}")
    return seg.mem
