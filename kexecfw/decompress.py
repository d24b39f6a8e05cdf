"""Decompress a kernel or an initrd with an output cap: the one place kexecfw unpacks them.

Every codec runs streaming with a bounded output per step (zlib/lzma/bz2 ``max_length``, a zstd
stream reader's ``read(n)``, lz4's legacy blocks of at most 8 MiB), so a small input that unpacks
to gigabytes (a damaged or hostile file) is refused once it passes ``cap`` instead of filling
memory; ``decompressed_size`` counts without keeping the bytes. Every failure is one BadInputError
naming the file and the codec. Dump pages (kexecfw/vmcore) are not unpacked here: their output is
capped by the page size.

Codec names are the kernel's (CONFIG_KERNEL_*, the zboot header's comp_type): gzip, xz, lzma,
bzip2, zstd, lz4 (the legacy frame of lib/decompress_unlz4.c).
"""
from __future__ import annotations

import struct
import zlib
from typing import Callable, Iterator

from kexecfw.errors import BadInputError

# A kernel Image or vmlinux payload is tens of MiB (Debian's arm64 Image 32 MiB, x86_64 vmlinux 60 MiB).
KERNEL_IMAGE_CAP = 512 << 20
# The unpacked initrd of `crashkernel estimate`: it has to fit a crash reservation, which is far smaller.
INITRD_CAP = 2 << 30

CHUNK = 1 << 20                      # the most a zlib/lzma/bz2 step produces at once
# liblzma allocates the dictionary a stream's header asks for: kernels use 32 MiB (scripts/xz_wrap.sh),
# xz -9 initrds 64 MiB. (zstd refuses windows past 128 MiB by itself; bzip2 blocks are 900 KB.)
LZMA_MEMLIMIT = 256 << 20
ZSTD_STEP = 1 << 10                  # the input a zstd step gets (see _zstd)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_LEGACY_MAGIC = 0x184C2102        # lib/decompress_unlz4.c: the legacy frame the kernel build writes
LZ4_LEGACY_BLOCK = 8 << 20           # its blocks unpack to at most 8 MiB each

MAGICS = (  # (codec, magic at offset 0): what sniff() recognises
    ("gzip", b"\x1f\x8b"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("zstd", ZSTD_MAGIC),
    ("lz4", struct.pack("<I", LZ4_LEGACY_MAGIC)),
    ("lzma", b"\x5d\x00\x00"),       # lzma "alone": properties byte 0x5d, then the dictionary size
)


def sniff(data: bytes) -> str | None:
    """The codec whose magic ``data`` starts with, or None."""
    return next((codec for codec, magic in MAGICS if data.startswith(magic)), None)


def decompress(data: bytes, codec: str, cap: int, what: str) -> bytes:
    """All of ``data`` unpacked with ``codec``; BadInputError past ``cap`` bytes or on a codec error."""
    return b"".join(_chunks(data, codec, cap, what))


def decompressed_size(data: bytes, codec: str, cap: int, what: str) -> int:
    """How many bytes ``data`` unpacks to, counted without keeping them (at most ``cap``)."""
    return sum(len(chunk) for chunk in _chunks(data, codec, cap, what))


def decompressed_prefix(data: bytes, codec: str, n: int, what: str) -> bytes:
    """The first ``n`` unpacked bytes (fewer if the stream is shorter); only the steps that reach them run."""
    out = b""
    for chunk in _chunks(data, codec, 1 << 62, what):
        out += chunk
        if len(out) >= n:
            break
    return out[:n]


def _chunks(data: bytes, codec: str, cap: int, what: str) -> Iterator[bytes]:
    steps = _CODECS.get(codec)
    if steps is None:
        raise BadInputError(f"{what} is compressed with {codec}, which kexecfw cannot unpack "
                            f"({', '.join(_CODECS)} are supported)")
    total = 0
    try:
        for chunk in steps(data):
            total += len(chunk)
            if total > cap:
                raise BadInputError(f"{what} decompresses ({codec}) to more than {_size(cap)}: "
                                    "not a kernel image or initrd kexecfw can use")
            yield chunk
    except _codec_errors(codec) as e:
        raise BadInputError(f"{what} does not decompress as {codec}: {e or type(e).__name__}") from None


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 and not n % (1 << 30) else f"{n >> 20} MiB" if n >= 1 << 20 \
        else f"{n} bytes"


def _codec_errors(codec: str) -> tuple[type[BaseException], ...]:
    """What the codec's library raises for bad data (its module is imported: _chunks only asks once
    the codec has run, or failed to import, which is a BadInputError already)."""
    errors: tuple[type[BaseException], ...] = (EOFError, ValueError, zlib.error)
    try:
        if codec in ("xz", "lzma"):
            import lzma
            errors += (lzma.LZMAError,)
        elif codec == "bzip2":
            errors += (OSError,)             # bz2 reports invalid data as OSError
        elif codec == "zstd":
            import zstandard
            errors += (zstandard.ZstdError,)
        elif codec == "lz4":
            import lz4.block
            errors += (lz4.block.LZ4BlockError,)
    except ImportError:
        pass
    return errors


def _truncated(codec: str) -> EOFError:
    return EOFError(f"the {codec} stream is truncated")


def _gzip(data: bytes) -> Iterator[bytes]:
    """Concatenated gzip members (an initrd may be several); anything after the last one is ignored."""
    rest = data
    while True:
        d = zlib.decompressobj(wbits=31)
        pending = rest
        while not d.eof:
            out = d.decompress(pending, CHUNK)
            pending = d.unconsumed_tail
            if out:
                yield out
            elif not pending:
                raise _truncated("gzip")
        rest = d.unused_data
        if not rest.startswith(b"\x1f\x8b"):
            return


def _stepwise(make: Callable[[], object], magic: bytes, codec: str) -> Callable[[bytes], Iterator[bytes]]:
    """lzma/bz2 decompressor objects: ``decompress(data, max_length)``, ``needs_input``, ``eof``,
    ``unused_data``; further streams that start with ``magic`` are unpacked too."""
    def steps(data: bytes) -> Iterator[bytes]:
        rest = data
        while True:
            d = make()
            pending = rest
            while not d.eof:
                out = d.decompress(pending, CHUNK)
                pending = b""
                if out:
                    yield out
                elif d.needs_input:
                    raise _truncated(codec)
            rest = d.unused_data
            if not magic or not rest.startswith(magic):
                return
    return steps


def _xz(data: bytes) -> Iterator[bytes]:
    import lzma
    return _stepwise(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT),
                     b"\xfd7zXZ\x00", "xz")(data)


def _lzma(data: bytes) -> Iterator[bytes]:
    import lzma
    return _stepwise(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT),
                     b"", "lzma")(data)


def _bzip2(data: bytes) -> Iterator[bytes]:
    import bz2
    return _stepwise(bz2.BZ2Decompressor, b"BZh", "bzip2")(data)


def _zstd(data: bytes) -> Iterator[bytes]:
    """Concatenated zstd frames. The decompression object has no output limit, so it is fed
    ZSTD_STEP bytes at a time: a zstd RLE block turns 4 input bytes into 128 KiB (the largest
    block), so one step unpacks to at most 32 MiB."""
    try:
        import zstandard
    except ImportError:
        raise BadInputError("zstd-compressed input needs the 'zstandard' Python package") from None
    view = memoryview(data)
    pos = 0
    while True:
        d = zstandard.ZstdDecompressor().decompressobj()
        while not d.eof:
            if pos >= len(view):
                raise _truncated("zstd")
            end = min(pos + ZSTD_STEP, len(view))
            out = d.decompress(view[pos:end])
            pos = end
            if out:
                yield out
        pos -= len(d.unused_data)       # what followed the frame in the last step
        if not data.startswith(ZSTD_MAGIC, pos):
            return


def _lz4(data: bytes) -> Iterator[bytes]:
    """The legacy frame: magic, then blocks of (u32 compressed size, data); the kernel build appends the
    unpacked size as a last u32, and frames may be concatenated (the magic again)."""
    try:
        import lz4.block
    except ImportError:
        raise BadInputError("LZ4-compressed input needs the 'lz4' Python package") from None
    pos = 4
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        if size == LZ4_LEGACY_MAGIC:
            pos += 4
            continue
        if pos + 4 + size > len(data):
            break                           # the trailing u32 (the unpacked size), or a cut file
        yield lz4.block.decompress(data[pos + 4:pos + 4 + size], uncompressed_size=LZ4_LEGACY_BLOCK)
        pos += 4 + size


_CODECS: dict[str, Callable[[bytes], Iterator[bytes]]] = {
    "gzip": _gzip, "xz": _xz, "lzma": _lzma, "bzip2": _bzip2, "zstd": _zstd, "lz4": _lz4,
}
