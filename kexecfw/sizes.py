"""Sizes people write in options and kdump.toml: "256M", "1G", "512KiB" (binary units)."""
from __future__ import annotations

import re

from kexecfw.errors import BadInputError

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$")


def parse_size(text: str) -> int:
    """Bytes of a size like "256M": a number with an optional K, M, G or T suffix (binary units, either
    case, optionally followed by "iB" or "B")."""
    m = _SIZE.match(text)
    if not m:
        raise BadInputError(f"{text!r} is not a size (a number with an optional K, M, G or T suffix)")
    return int(m[1]) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m[2].lower()]
