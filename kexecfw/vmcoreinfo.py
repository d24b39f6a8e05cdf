"""VMCOREINFO: the ``KEY=value`` text the kernel exports for dump tools (kernel/vmcore_info.c).

Values are typed by key family: ``SYMBOL(x)``, ``OFFSET(x.y)``, ``SIZE(x)``,
``LENGTH(x)``, ``NUMBER(x)``, ``PAGESIZE``, ``CRASHTIME``, ``OSRELEASE``,
``KERNELOFFSET`` ... Symbols and KERNELOFFSET are hex without 0x; SIZE, OFFSET,
LENGTH, PAGESIZE and CRASHTIME are decimal; NUMBER is decimal (may be
negative) except a few that the kernel prints in hex (``NUMBER(PAGE_OFFSET)`` style
keys print with 0x on some arches — both forms are accepted).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEX_KEYS = {"KERNELOFFSET", "kimage_voffset", "PHYS_OFFSET", "TCR_EL1_T1SZ", "phys_base", "KERNELPACMASK"}
_HEX_FAMILIES = {"SYMBOL"}
_KEY = re.compile(r"^(?P<family>[A-Z_]+)\((?P<name>[^)]*)\)$")


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


@dataclass
class VmcoreInfo:
    """Parsed VMCOREINFO; ``raw`` keeps every line's text value by key."""

    raw: dict[str, str] = field(default_factory=dict)

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
        m = _KEY.match(key)
        family = m["family"] if m else key
        hex_default = family in _HEX_FAMILIES or key in _HEX_KEYS or (m is not None and m["name"] in _HEX_KEYS)
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
