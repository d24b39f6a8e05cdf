"""VMCOREINFO: the ``KEY=value`` text the kernel exports for dump tools (kernel/vmcore_info.c).

Values are typed by key family: ``SYMBOL(x)``, ``OFFSET(x.y)``, ``SIZE(x)``,
``LENGTH(x)``, ``NUMBER(x)``, ``PAGESIZE``, ``CRASHTIME``, ``OSRELEASE``,
``KERNELOFFSET`` ... Symbols and KERNELOFFSET are hex without 0x; SIZE, OFFSET,
LENGTH, PAGESIZE and CRASHTIME are decimal; NUMBER is decimal (may be
negative, e.g. ``NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129``; x86_64's
``NUMBER(phys_base)`` is decimal too) except those arm64 prints with a ``0x``
prefix (``NUMBER(kimage_voffset)``, ``NUMBER(PHYS_OFFSET)``, ``NUMBER(VMALLOC_START)`` ...),
which the prefix identifies.
"""
from __future__ import annotations

import struct

from kexecfw.errors import BadInputError
from kexecfw.vmcore.bounds import MAX_STRUCT_SIZE

# Keys the kernel prints in hex without a 0x prefix (values with 0x are read as hex anyway).
_HEX_KEYS = {"KERNELOFFSET"}
_HEX_FAMILIES = {"SYMBOL"}
_INT_KEYS = {"KERNELOFFSET", "PAGESIZE", "CRASHTIME"}
_FAMILY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"


def _split_key(key: str) -> tuple[str, str] | None:
    """``FAMILY(name)`` as (family, name), else None. (Not `re`: vmcore dmesg does not import it.)"""
    family, paren, rest = key.partition("(")
    if not paren or not family or family.strip(_FAMILY_CHARS) or not rest.endswith(")") or ")" in rest[:-1]:
        return None
    return family, rest[:-1]


def _parse_int(text: str, hex_default: bool) -> int | None:
    t = text.strip()
    neg = t.startswith("-")
    body = t[1:] if neg else t
    try:
        if body.lower().startswith("0x"):
            v = int(body, 16)
        elif hex_default:
            v = int(body, 16)
        else:
            v = int(body, 10)
    except ValueError:
        return None
    return -v if neg else v


class VmcoreInfo:
    """Parsed VMCOREINFO; ``raw`` keeps every line's text value by key."""

    def __init__(self, raw: dict[str, str] | None = None) -> None:
        self.raw: dict[str, str] = dict(raw or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VmcoreInfo) and other.raw == self.raw

    def __repr__(self) -> str:
        return f"VmcoreInfo({len(self.raw)} keys, OSRELEASE={self.osrelease!r})"

    @classmethod
    def parse(cls, text: str | bytes) -> "VmcoreInfo":
        if isinstance(text, bytes):
            text = text.rstrip(b"\0").decode("ascii", "replace")
        raw: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key:
                raw[key.strip()] = value.strip()
        return cls(raw)

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def get_int(self, key: str) -> int | None:
        """Integer value of ``key`` (``SYMBOL(_stext)``, ``OFFSET(page.flags)``, ``PAGESIZE`` ...)."""
        if key not in self.raw:
            return None
        parts = _split_key(key)
        family = parts[0] if parts else key
        hex_default = family in _HEX_FAMILIES or key in _HEX_KEYS or (parts is not None and parts[1] in _HEX_KEYS)
        return _parse_int(self.raw[key], hex_default)

    def symbol(self, name: str) -> int | None:
        return self.get_int(f"SYMBOL({name})")

    def offset(self, name: str) -> int | None:
        return self.get_int(f"OFFSET({name})")

    def size(self, name: str) -> int | None:
        return self.get_int(f"SIZE({name})")

    def length(self, name: str) -> int | None:
        return self.get_int(f"LENGTH({name})")

    def number(self, name: str) -> int | None:
        return self.get_int(f"NUMBER({name})")

    @property
    def osrelease(self) -> str | None:
        return self.raw.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        return self.get_int("PAGESIZE")

    @property
    def kernel_offset(self) -> int | None:
        return self.get_int("KERNELOFFSET")

    @property
    def crash_time(self) -> int | None:
        return self.get_int("CRASHTIME")

    @property
    def build_id(self) -> str | None:
        return self.raw.get("BUILD-ID")

    def typed(self) -> dict[str, int | str]:
        """Every key with its typed value: integers where the key family is numeric, text otherwise."""
        out: dict[str, int | str] = {}
        for key, text in self.raw.items():
            value = self.get_int(key) if (_split_key(key) or key in _INT_KEYS) else None
            out[key] = value if value is not None else text
        return out


def struct_layout(struct_name: str, struct_size: int,
                  fields: list[tuple[str, int, str]]) -> tuple[struct.Struct, list[str]]:
    """A little-endian ``struct.Struct`` that reads ``fields`` out of one ``struct_size``-byte
    ``struct_name`` in a single unpack, and the field names in the order it yields them (by offset).

    ``fields``: (name, offset from VMCOREINFO's OFFSET(), struct format character) each. Offsets
    that overlap or run past the struct (a corrupt VMCOREINFO) raise BadInputError.
    """
    if not 0 < struct_size <= MAX_STRUCT_SIZE:
        raise BadInputError(f"VMCOREINFO SIZE({struct_name})={struct_size} is not plausible (max {MAX_STRUCT_SIZE}): "
                            "the dump is corrupt")
    by_offset = sorted(fields, key=lambda f: f[1])
    fmt, pos = "<", 0
    for name, offset, code in by_offset:
        if offset < 0:
            raise BadInputError(f"VMCOREINFO OFFSET({struct_name}.{name})={offset} lies outside its struct")
        if offset < pos:
            raise BadInputError(f"VMCOREINFO OFFSET({struct_name}.{name}) overlaps the field before it")
        fmt += f"{offset - pos}x{code}" if offset > pos else code
        pos = offset + struct.calcsize("<" + code)
    if pos > struct_size:
        raise BadInputError(f"VMCOREINFO OFFSET({struct_name}.{by_offset[-1][0]}) lies outside its struct "
                            f"({struct_size} bytes)")
    return struct.Struct(f"{fmt}{struct_size - pos}x"), [name for name, _, _ in by_offset]
