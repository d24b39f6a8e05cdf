"""The x86_64 purgatory: built from source, linked by the core with our relocations, and run natively.

The purgatory's C is position-dependent 64-bit code; linked at an address this
process can map, its sha256 check runs on the host exactly as it will after
kexec (the segments live at their "physical" addresses in the same mapping).
"""
from __future__ import annotations

import platform
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kexecfw.errors import KexecfwError
from kexecfw.plugins.x86_64 import EM_X86_64, PURGATORY_FILE
from kexecfw.plugins.x86_64.relocations import (R_X86_64_32, R_X86_64_32S, R_X86_64_64, R_X86_64_PC32,
                                                X86_64_RELOCATIONS)
from kexecfw.purgatory import PurgatoryLayout
from tests.conftest import REPO, oracle

needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="runs x86_64 code natively")


def _link(base: int):
    layout = PurgatoryLayout(Path(PURGATORY_FILE).read_bytes(), EM_X86_64)
    return layout, layout.link(base, X86_64_RELOCATIONS, "purgatory_start")


def test_shipped_object_is_current() -> None:
    """`make purgatory` from the sources in the repo gives the object that is committed."""
    if platform.machine() != "x86_64":
        pytest.skip("builds the x86_64 object with the host's gcc: this host is not x86_64")
    oracle("gcc", "gcc")
    oracle("ld", "binutils")
    subprocess.run(["make", "-s", "-B", "plugins/x86_64/purgatory/purgatory.ro"], cwd=REPO, check=True,
                   env={"PATH": "/usr/bin:/bin"}, capture_output=True)
    # building in place must not change the committed bytes (deterministic toolchain output)
    diff = subprocess.run(["git", "diff", "--quiet", "--", "plugins/x86_64/purgatory/purgatory.ro"], cwd=REPO)
    assert diff.returncode == 0, "purgatory.ro differs from its sources: run make purgatory and commit it"


def test_link_applies_every_relocation_type_it_uses() -> None:
    base = 0x74FF8000
    layout, linked = _link(base)
    names = {r.type_name for r in linked.relocations}
    assert names <= {"R_X86_64_64", "R_X86_64_PC32", "R_X86_64_PLT32"}
    assert "R_X86_64_64" in names and "R_X86_64_PC32" in names and "R_X86_64_PLT32" in names
    assert linked.entry == base + linked.symbols["purgatory_start"].offset
    # the GDT descriptor's base (R_X86_64_64) is the GDT's address; the GDT has the boot.rst descriptors
    image = linked.image
    found = False
    for r in (r for r in linked.relocations if r.type_name == "R_X86_64_64"):
        addr = struct.unpack_from("<Q", image, r.place - base)[0]
        assert addr == r.value
        off = addr - base
        if 0 <= off <= len(image) - 32 and struct.unpack_from("<4Q", image, off)[2:] == \
                (0x00AF9A000000FFFF, 0x00CF92000000FFFF):
            limit = struct.unpack_from("<H", image, r.place - base - 2)[0]
            assert limit == 32 - 1
            found = True
    assert found
    # PC32 places resolve to their targets
    for r in linked.relocations:
        if r.type_name in ("R_X86_64_PC32", "R_X86_64_PLT32"):
            disp = struct.unpack_from("<i", image, r.place - base)[0]
            assert r.place + disp == r.value


def test_symbols_the_plugin_patches_exist() -> None:
    _, linked = _link(0x100000)
    for name in ("purgatory_kernel_entry", "purgatory_boot_params", "purgatory_sha256_regions"):
        assert name in linked.symbols
    linked.patch("purgatory_kernel_entry", struct.pack("<Q", 0x71C00200))
    assert struct.unpack_from("<Q", linked.image, linked.symbols["purgatory_kernel_entry"].offset)[0] == 0x71C00200


def test_relocation_formulas_and_overflow() -> None:
    buf = bytearray(8)
    X86_64_RELOCATIONS[R_X86_64_64][1](buf, 0, 0x1000, 0xFFFFFFFFAB800000)
    assert struct.unpack("<Q", buf)[0] == 0xFFFFFFFFAB800000
    X86_64_RELOCATIONS[R_X86_64_PC32][1](buf, 0, 0x2000, 0x1000)
    assert struct.unpack_from("<i", buf)[0] == -0x1000
    X86_64_RELOCATIONS[R_X86_64_32S][1](buf, 0, 0, 0xFFFFFFFF80001000)
    assert struct.unpack_from("<i", buf)[0] == -0x7FFFF000
    with pytest.raises(KexecfwError, match="R_X86_64_PC32.*overflows"):
        X86_64_RELOCATIONS[R_X86_64_PC32][1](buf, 0, 0x1_0000_0000_0000, 0x1000)
    with pytest.raises(KexecfwError, match="R_X86_64_32 .*overflows"):
        X86_64_RELOCATIONS[R_X86_64_32][1](buf, 0, 0, 1 << 32)
    with pytest.raises(KexecfwError, match="R_X86_64_32S.*overflows"):
        X86_64_RELOCATIONS[R_X86_64_32S][1](buf, 0, 0, 0x80000000)


def test_other_relocation_types_are_refused_by_name(tmp_path: Path) -> None:
    """A position-independent object uses GOT relocations, which a purgatory must not."""
    if platform.machine() != "x86_64":
        pytest.skip("builds an x86_64 object with the host's gcc: this host is not x86_64")
    oracle("gcc", "gcc")
    src = tmp_path / "pic.c"
    src.write_text("extern int elsewhere; int get(void) { return elsewhere; }\n")
    obj = tmp_path / "pic.o"
    subprocess.run(["gcc", "-O2", "-fPIC", "-c", str(src), "-o", str(obj)], check=True)
    layout = PurgatoryLayout(obj.read_bytes(), EM_X86_64)
    with pytest.raises(KexecfwError, match=r"R_X86_64_(REX_)?GOTPCREL(X)?"):
        layout.link(0x100000, X86_64_RELOCATIONS, "get")


RUNNER = textwrap.dedent("""
    import ctypes, hashlib, struct, sys
    from pathlib import Path
    from kexecfw.plugins.x86_64 import EM_X86_64, PURGATORY_FILE
    from kexecfw.plugins.x86_64.relocations import X86_64_RELOCATIONS
    from kexecfw.purgatory import PurgatoryLayout
    from kexecfw.segments.plan import Segment

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    PROT_RWX, MAP_PRIVATE_ANON, MAP_FIXED_NOREPLACE = 7, 0x22, 0x100000

    def map_at(addr, size):
        got = libc.mmap(addr, size, PROT_RWX, MAP_PRIVATE_ANON | MAP_FIXED_NOREPLACE, -1, 0)
        if got != addr:
            sys.exit(f"cannot map {addr:#x}: errno {ctypes.get_errno()}")

    base, seg_base = 0x3F0000000, 0x3E0000000
    layout = PurgatoryLayout(Path(PURGATORY_FILE).read_bytes(), EM_X86_64)
    map_at(base, (layout.size + 0xFFF) & ~0xFFF)
    map_at(seg_base, 0x400000)
    linked = layout.link(base, X86_64_RELOCATIONS, "purgatory_start")
    # three "segments" at fixed addresses: content followed by zero fill up to memsz
    segs = []
    for i, (size, memsz) in enumerate([(0x1234, 0x2000), (0x100000, 0x100000), (0x10, 0x1000)]):
        data = hashlib.sha256(bytes([i])).digest() * (size // 32) + bytes(size % 32)
        mem = seg_base + i * 0x110000
        ctypes.memmove(mem, data, size)
        segs.append(Segment(f"s{i}", data, mem, memsz))
    mode = sys.argv[1]
    linked.fill_sha256(segs, skip=(mode == "skip"))
    ctypes.memmove(base, bytes(linked.image), len(linked.image))
    if mode == "tamper":
        ctypes.memset(seg_base + 0x110000 + 0x8000, 0x5A, 1)
    if mode == "tamper-fill":   # the zero fill past bufsz is covered too
        ctypes.memset(seg_base + 0x1F00, 1, 1)
    verify = ctypes.CFUNCTYPE(ctypes.c_int)(linked.address_of("purgatory_verify_sha256"))
    result = verify()
    if result == 0:
        ctypes.CFUNCTYPE(None)(linked.address_of("purgatory_main"))()   # returns when intact
    print(result)
""")


@needs_x86_64
@pytest.mark.parametrize("mode,expected", [("intact", "0"), ("skip", "0"), ("tamper", "1"), ("tamper-fill", "1")])
def test_linked_purgatory_checks_sha256_natively(mode: str, expected: str) -> None:
    out = subprocess.run([sys.executable, "-c", RUNNER, mode], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
