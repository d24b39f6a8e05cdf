"""The kdump-compressed (diskdump) format makedumpfile writes, and its flattened (-F) stream.

Layouts from makedumpfile's diskdump_mod.h and makedumpfile.h (the format's
only specification):

file:  block 0                      struct disk_dump_header
       block 1 .. sub_hdr_size      struct kdump_sub_header, then the ELF notes
                                    (VMCOREINFO inside them)
       next bitmap_blocks blocks    1st bitmap (pages that exist) then 2nd bitmap
                                    (pages dumped), one bit per pfn, LSB first
       next                         struct page_desc per dumped page, pfn order
       anywhere after               page data (compressed or not), as page_desc says

Page compression codecs are optional imports: zlib (stdlib), zstandard, lzo
(python-lzo) and snappy (python-snappy), each only when installed.
"""
from __future__ import annotations

import struct

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
HEADER_VERSION = 6

# struct disk_dump_header: signature[8], header_version, struct new_utsname (6 x 65 bytes),
# (pad to 8), struct timeval {tv_sec, tv_usec}, status, block_size, sub_hdr_size,
# bitmap_blocks, max_mapnr, total_ram_blocks, device_blocks, written_blocks, current_cpu, nr_cpus
DISK_DUMP_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
# struct kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn, offset_vmcoreinfo,
# size_vmcoreinfo, offset_note, size_note, offset_eraseinfo, size_eraseinfo, start_pfn_64,
# end_pfn_64, max_mapnr_64
KDUMP_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
# struct page_desc: offset (off_t), size, flags, page_flags
PAGE_DESC = struct.Struct("<qIIQ")

# disk_dump_header.status and page_desc.flags bits
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20

CODEC_FLAGS = {"zlib": DUMP_DH_COMPRESSED_ZLIB, "lzo": DUMP_DH_COMPRESSED_LZO,
               "snappy": DUMP_DH_COMPRESSED_SNAPPY, "zstd": DUMP_DH_COMPRESSED_ZSTD, "none": 0}

# makedumpfile.h, flattened format: a 4096-byte header block, then (offset, size) big-endian
# int64 pairs each followed by size bytes, ending with (-1, -1).
MAKEDUMPFILE_SIGNATURE = b"makedumpfile"
FLAT_HEADER = struct.Struct(">16sqq")      # signature[16], type, version
FLAT_HEADER_SIZE = 4096
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
FLAT_DATA_HEADER = struct.Struct(">qq")    # struct makedumpfile_data_header {offset, buf_size}
END_FLAG_FLAT_HEADER = -1

# makedumpfile -d bits
DL_EXCLUDE_ZERO = 1
DL_EXCLUDE_CACHE = 2
DL_EXCLUDE_CACHE_PRI = 4
DL_EXCLUDE_USER_DATA = 8
DL_EXCLUDE_FREE = 16


def codec_name(flags: int) -> str:
    for name, bit in CODEC_FLAGS.items():
        if bit and flags & bit:
            return name
    return "none"


def decompressor(flags: int, page_size: int):
    """A function bytes -> page for page_desc ``flags``; raises ImportError if the codec is missing.

    Every codec's output is capped just above ``page_size`` (a page's data is untrusted: a few KiB
    of zlib can inflate to megabytes); the caller checks that exactly one page came out.
    """
    if flags & DUMP_DH_COMPRESSED_ZLIB:
        import zlib

        def inflate(data: bytes) -> bytes:
            d = zlib.decompressobj()
            page = d.decompress(data, page_size + 1)
            if not d.eof:
                raise zlib.error("not one zlib stream of at most a page")
            return page
        return inflate
    if flags & DUMP_DH_COMPRESSED_ZSTD:
        import zstandard
        d = zstandard.ZstdDecompressor()
        return lambda data: d.decompress(data, max_output_size=page_size)
    if flags & DUMP_DH_COMPRESSED_LZO:
        import lzo  # python-lzo
        return lambda data: lzo.decompress(data, False, page_size)
    if flags & DUMP_DH_COMPRESSED_SNAPPY:
        import snappy  # python-snappy

        def unsnap(data: bytes) -> bytes:
            # the stream starts with its length (a varint); snappy allocates that much first
            length, shift = 0, 0
            for byte in data[:5]:
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if length > page_size:
                raise ValueError(f"snappy data claims {length} bytes")
            return snappy.uncompress(data)
        return unsnap
    return lambda data: data
