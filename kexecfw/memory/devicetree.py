"""A flattened device tree (DTB) read, edited and written back, behind a small adapter over ``fdt``.

The ``fdt`` package (0.3.3) holds the tree and writes the blob, but its parser
is not used: it raises on FDT_NOP tags (QEMU and libfdt-edited blobs have
them), shares one memreserve list between all parses, and guesses property
types (strings, words, bytes), which can change bytes on the way back. Here
the blob is walked with explicit layouts and every property is kept as raw
bytes, so a tree round-trips to the same content. Values we write are
big-endian cells sized by the parent's ``#address-cells``/``#size-cells``.

Layouts: struct fdt_header, struct fdt_reserve_entry, struct fdt_node_header
and struct fdt_property from scripts/dtc/libfdt/fdt.h.
"""
from __future__ import annotations

import os
import struct

import fdt

from kexecfw.errors import BadInputError
from kexecfw.memory.ranges import Range, merge
from kexecfw.records import Record

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the capture boot's kdump save does not import typing
if TYPE_CHECKING:
    from typing import Iterator

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

# struct fdt_header: magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
# last_comp_version, boot_cpuid_phys, size_dt_strings, size_dt_struct (all big-endian u32)
FDT_HEADER = struct.Struct(">10I")
# struct fdt_reserve_entry: address, size (big-endian u64)
FDT_RESERVE_ENTRY = struct.Struct(">QQ")
# struct fdt_property after its tag: len, nameoff
FDT_PROPERTY = struct.Struct(">II")
FDT_TAG = struct.Struct(">I")

# The kernel's defaults when a node does not say (Documentation/devicetree/usage-model.rst, ePAPR 2.3.5).
DEFAULT_ADDRESS_CELLS = 2
DEFAULT_SIZE_CELLS = 1
OF_MAX_ADDR_CELLS = 4


def encode_cells(values: list[int], cells: int) -> bytes:
    """Big-endian cells: each value in ``cells`` 32-bit words. Raises when a value does not fit."""
    out = bytearray()
    for v in values:
        if v < 0 or v >> (32 * cells):
            raise BadInputError(f"value {v:#x} does not fit in {cells} device-tree cell(s)")
        out += v.to_bytes(4 * cells, "big")
    return bytes(out)


def decode_cells(data: bytes, cells: int) -> list[int]:
    """Split big-endian ``data`` into integers of ``cells`` 32-bit words each."""
    width = 4 * cells
    if cells <= 0 or len(data) % width:
        raise BadInputError(f"device-tree value of {len(data)} bytes is not a multiple of {cells} cell(s)")
    return [int.from_bytes(data[i:i + width], "big") for i in range(0, len(data), width)]


def encode_string(text: str) -> bytes:
    return text.encode() + b"\0"


def decode_string(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode(errors="replace")


class FdtHeader(Record, frozen=True):
    """The fields of struct fdt_header we keep across a rewrite."""

    version: int
    last_comp_version: int
    boot_cpuid_phys: int


class DeviceTree:
    """A parsed DTB: nodes addressed by absolute path (``/chosen``), properties as raw bytes."""

    def __init__(self, tree: fdt.FDT, memreserve: list[Range], header: FdtHeader, source: str = "DTB") -> None:
        self._tree = tree
        self.memreserve = memreserve
        self.header = header
        self.source = source

    # --- reading and writing blobs -----------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "DTB") -> "DeviceTree":
        if len(data) < FDT_HEADER.size:
            raise BadInputError(f"{source} is not a device tree: {len(data)} bytes is shorter than its header")
        (magic, totalsize, off_struct, off_strings, off_rsvmap, version, last_comp, boot_cpuid,
         size_strings, size_struct) = FDT_HEADER.unpack_from(data)
        if magic != FDT_MAGIC:
            raise BadInputError(f"{source} is not a device tree (magic {magic:#010x}, want {FDT_MAGIC:#010x})")
        if version < 17 or last_comp > 17:
            raise BadInputError(f"{source} is a version {version} device tree; only version 17 "
                                "(what dtc and the kernel write) is supported: convert it with dtc")
        if totalsize > len(data):
            raise BadInputError(f"{source} is truncated: its header says {totalsize} bytes, the file has {len(data)}")
        memreserve = _parse_memreserve(data, off_rsvmap, totalsize, source)
        tree = fdt.FDT(entries=[])   # fresh list: fdt's default argument is shared between instances
        tree.header.version = 17
        tree.header.boot_cpuid_phys = boot_cpuid
        strings = data[off_strings:off_strings + size_strings]
        tree.root = _parse_structure(data[off_struct:off_struct + size_struct], strings, source)
        return cls(tree, memreserve, FdtHeader(version, last_comp, boot_cpuid), source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "DeviceTree":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadInputError(f"cannot read device tree {path}: {e.strerror}") from None
        return cls.from_bytes(data, str(path))

    def to_bytes(self) -> bytes:
        """A compact version-17 blob (no NOPs, no padding) with the current memreserve list."""
        self._tree.entries = [{"address": r.start, "size": r.size} for r in self.memreserve]
        self._tree.header.boot_cpuid_phys = self.header.boot_cpuid_phys
        return self._tree.to_dtb(version=17)

    # --- nodes and properties ----------------------------------------------------------------

    def _node(self, path: str, create: bool = False) -> fdt.Node | None:
        node = self._tree.root
        for name in (p for p in path.split("/") if p):
            sub = node.get_subnode(name)
            if sub is None:
                if not create:
                    return None
                sub = fdt.Node(name)
                node.append(sub)
            node = sub
        return node

    def has_node(self, path: str) -> bool:
        return self._node(path) is not None

    def node_names(self, path: str = "/") -> list[str]:
        node = self._node(path)
        return [n.name for n in node.nodes] if node is not None else []

    def properties(self, path: str) -> dict[str, bytes]:
        """Every property of the node at ``path`` as raw bytes ({} if the node is absent)."""
        node = self._node(path)
        return {p.name: _raw(p) for p in node.props} if node is not None else {}

    def get(self, path: str, name: str) -> bytes | None:
        node = self._node(path)
        prop = node.get_property(name) if node is not None else None
        return _raw(prop) if prop is not None else None

    def get_string(self, path: str, name: str) -> str | None:
        value = self.get(path, name)
        return decode_string(value) if value is not None else None

    def get_u32(self, path: str, name: str) -> int | None:
        value = self.get(path, name)
        if value is None:
            return None
        if len(value) != 4:
            raise BadInputError(f"{self.source}: {path} {name} is {len(value)} bytes, not one cell")
        return int.from_bytes(value, "big")

    def set(self, path: str, name: str, value: bytes) -> None:
        """Set (or add) a property to exactly ``value``; missing nodes on the path are created."""
        node = self._node(path, create=True)
        assert node is not None
        prop = fdt.PropBytes(name, data=bytes(value)) if value else fdt.Property(name)
        existing = node.get_property(name)
        if existing is not None:
            node.remove_property(name)
        node.append(prop)

    def set_string(self, path: str, name: str, text: str) -> None:
        self.set(path, name, encode_string(text))

    def remove(self, path: str, name: str) -> bool:
        """Remove a property; True if it was there."""
        node = self._node(path)
        if node is None or node.get_property(name) is None:
            return False
        node.remove_property(name)
        return True

    def walk(self) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(path, properties) of every node, parents before children, in blob order."""
        stack = [("/", self._tree.root)]
        while stack:
            path, node = stack.pop()
            yield path, {p.name: _raw(p) for p in node.props}
            for child in reversed(node.nodes):
                stack.append((path.rstrip("/") + "/" + child.name, child))

    # --- cells and address ranges ------------------------------------------------------------

    def cells(self, path: str = "/") -> tuple[int, int]:
        """``#address-cells`` and ``#size-cells`` that node ``path`` sets for its children."""
        addr = self.get_u32(path, "#address-cells")
        size = self.get_u32(path, "#size-cells")
        addr, size = (DEFAULT_ADDRESS_CELLS if addr is None else addr, DEFAULT_SIZE_CELLS if size is None else size)
        # drivers/of/address.c OF_MAX_ADDR_CELLS: the kernel reads no address or size wider than 4 cells;
        # a larger count is a corrupt tree (and would size every value written with it)
        if addr > OF_MAX_ADDR_CELLS or size > OF_MAX_ADDR_CELLS:
            raise BadInputError(f"{self.source}: {path} has #address-cells {addr} and #size-cells {size}; "
                                f"more than {OF_MAX_ADDR_CELLS} cells is not a device tree the kernel reads")
        return addr, size

    @property
    def root_cells(self) -> tuple[int, int]:
        return self.cells("/")

    def encode_ranges(self, ranges: list[Range], parent: str = "/") -> bytes:
        """``<address size>`` pairs in the cell sizes of ``parent`` (the root for /chosen values)."""
        addr_cells, size_cells = self.cells(parent)
        return b"".join(encode_cells([r.start], addr_cells) + encode_cells([r.size], size_cells) for r in ranges)

    def decode_ranges(self, data: bytes, parent: str = "/") -> list[Range]:
        addr_cells, size_cells = self.cells(parent)
        width = 4 * (addr_cells + size_cells)
        if width == 0 or len(data) % width:
            raise BadInputError(f"{self.source}: a reg-style value of {len(data)} bytes does not fit "
                                f"<{addr_cells} address + {size_cells} size> cells")
        out = []
        for i in range(0, len(data), width):
            start = int.from_bytes(data[i:i + 4 * addr_cells], "big")
            size = int.from_bytes(data[i + 4 * addr_cells:i + width], "big")
            out.append(Range(start, start + size))
        return out

    def set_ranges(self, path: str, name: str, ranges: list[Range]) -> None:
        self.set(path, name, self.encode_ranges(ranges))

    def get_ranges(self, path: str, name: str) -> list[Range] | None:
        value = self.get(path, name)
        return self.decode_ranges(value) if value is not None else None

    def memory_ranges(self) -> list[Range]:
        """RAM from the root's ``device_type = "memory"`` nodes (their ``reg``, minus disabled nodes)."""
        out: list[Range] = []
        for name in self.node_names("/"):
            path = "/" + name
            if self.get_string(path, "device_type") != "memory" or self.get_string(path, "status") == "disabled":
                continue
            reg = self.get(path, "reg")
            if reg is not None:
                out.extend(self.decode_ranges(reg, "/"))
        return merge(out)

    def reserved_memory(self, include_reusable: bool = True) -> list[Range]:
        """Static /reserved-memory children (those with ``reg``; dynamic ``size``-only ones have no address).

        ``include_reusable=False`` leaves out ``reusable`` pools (CMA), which the OS may use as RAM."""
        out: list[Range] = []
        for name in self.node_names("/reserved-memory"):
            path = f"/reserved-memory/{name}"
            reg = self.get(path, "reg")
            if not include_reusable and self.get(path, "reusable") is not None:
                continue
            if reg is not None:
                out.extend(self.decode_ranges(reg, "/reserved-memory"))
        return merge(out)

    def reserved_ranges(self, include_reusable: bool = True) -> list[Range]:
        """What the device tree keeps from the OS: /memreserve/ entries and /reserved-memory."""
        return merge(list(self.memreserve) + self.reserved_memory(include_reusable))


def _raw(prop: fdt.Property) -> bytes:
    """Raw bytes of a property as we store them (PropBytes), or of an fdt-typed one built elsewhere."""
    if isinstance(prop, fdt.PropBytes):
        return bytes(prop.data)
    if isinstance(prop, fdt.PropWords):
        return b"".join(w.to_bytes(4, "big") for w in prop.data)
    if isinstance(prop, fdt.PropStrings):
        return b"".join(s.encode() + b"\0" for s in prop.data)
    return b""


def _parse_memreserve(data: bytes, offset: int, end: int, source: str) -> list[Range]:
    out: list[Range] = []
    pos = offset
    while True:
        if pos + FDT_RESERVE_ENTRY.size > end:
            raise BadInputError(f"{source}: the /memreserve/ list runs past the end of the blob")
        address, size = FDT_RESERVE_ENTRY.unpack_from(data, pos)
        if address == 0 and size == 0:
            return out
        out.append(Range(address, address + size))
        pos += FDT_RESERVE_ENTRY.size


# spelt out, not string.ascii_letters: importing string compiles a regular expression (string.Template)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+-@#?")


def _cstring(data: bytes, pos: int, source: str) -> tuple[str, int]:
    """A node or property name (Devicetree Specification 2.2.1, 2.2.4: a small ASCII alphabet)."""
    end = data.find(b"\0", pos)
    if end < 0:
        raise BadInputError(f"{source}: unterminated name in the device tree at {pos:#x}")
    name = data[pos:end].decode("latin-1")
    if not set(name) <= _NAME_CHARS:
        raise BadInputError(f"{source}: invalid node or property name {name[:40]!r} at {pos:#x}; "
                            "the device tree is corrupt")
    return name, end + 1


def _append(parent: fdt.Node, item: fdt.Node | fdt.Property, source: str) -> None:
    try:
        parent.append(item)
    except Exception as e:     # fdt raises a bare Exception on a duplicate name
        raise BadInputError(f"{source}: {item.name!r} appears twice in one node; the device tree is corrupt "
                            f"({e})") from None


def _parse_structure(block: bytes, strings: bytes, source: str) -> fdt.Node:
    """Build fdt Nodes from the structure block, skipping FDT_NOP, keeping values as PropBytes."""
    root: fdt.Node | None = None
    stack: list[fdt.Node] = []
    pos = 0
    while pos + 4 <= len(block):
        (tag,) = FDT_TAG.unpack_from(block, pos)
        pos += 4
        if tag == FDT_BEGIN_NODE:
            name, pos = _cstring(block, pos, source)
            pos = (pos + 3) & ~3
            node = fdt.Node(name if stack else "/")
            if stack:
                _append(stack[-1], node, source)
            elif root is None:
                root = node
            else:
                raise BadInputError(f"{source}: more than one root node")
            stack.append(node)
        elif tag == FDT_END_NODE:
            if not stack:
                raise BadInputError(f"{source}: unbalanced end of node at {pos - 4:#x}")
            stack.pop()
        elif tag == FDT_PROP:
            if not stack or pos + FDT_PROPERTY.size > len(block):
                raise BadInputError(f"{source}: property outside a node or truncated at {pos - 4:#x}")
            length, nameoff = FDT_PROPERTY.unpack_from(block, pos)
            pos += FDT_PROPERTY.size
            value = block[pos:pos + length]
            if len(value) != length:
                raise BadInputError(f"{source}: property value runs past the structure block at {pos:#x}")
            name, _ = _cstring(strings, nameoff, source)
            _append(stack[-1], fdt.PropBytes(name, data=value) if length else fdt.Property(name), source)
            pos = (pos + length + 3) & ~3
        elif tag == FDT_NOP:
            continue
        elif tag == FDT_END:
            break
        else:
            raise BadInputError(f"{source}: unknown device-tree tag {tag:#x} at {pos - 4:#x}")
    if root is None or stack:
        raise BadInputError(f"{source}: the device tree's structure block is incomplete")
    return root
