"""The purgatory's sha256 C code (kexecfw/purgatory/{sha256,verify}.c) against hashlib: built natively
as a shared library, and as the shipped aarch64 object run under qemu-user."""
from __future__ import annotations

import ctypes
import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from kexecfw.plugins.arm64 import PURGATORY_FILE
from tests.arm64.conftest import need_cross_libc, need_tool
from tests.conftest import REPO, oracle

COMMON = REPO / "kexecfw" / "purgatory"
SOURCES = [COMMON / "sha256.c", COMMON / "verify.c"]
CTX_BYTES = 256     # >= sizeof(struct sha256_ctx) on any target


def make_variable(name: str) -> list[str]:
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "--eval",
                          f"print-var: ; @echo $({name})", "print-var"], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    gcc = need_tool("gcc")
    lib = tmp_path_factory.mktemp("sha") / "libpurgatory_sha256.so"
    subprocess.run([gcc, "-O2", "-std=gnu11", "-ffreestanding", "-fno-builtin", "-nostdlib", "-Wall", "-Werror",
                    "-shared", "-fPIC", f"-I{COMMON}", "-o", str(lib), *map(str, SOURCES)], check=True)
    return ctypes.CDLL(str(lib))


def c_sha256(lib: ctypes.CDLL, chunks: list[bytes]) -> bytes:
    ctx = ctypes.create_string_buffer(CTX_BYTES)
    out = ctypes.create_string_buffer(32)
    lib.sha256_init(ctx)
    for chunk in chunks:
        lib.sha256_update(ctx, ctypes.c_char_p(chunk), ctypes.c_size_t(len(chunk)))
    lib.sha256_final(ctx, out)
    return out.raw


@pytest.mark.parametrize("length", [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 100_003])
def test_one_shot_matches_hashlib(native: ctypes.CDLL, length: int) -> None:
    data = random.Random(length).randbytes(length)
    assert c_sha256(native, [data]) == hashlib.sha256(data).digest()


def test_split_updates_match_hashlib(native: ctypes.CDLL) -> None:
    rng = random.Random(7)
    data = rng.randbytes(20_000)
    cuts = sorted(rng.sample(range(1, len(data)), 60))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    assert c_sha256(native, chunks) == hashlib.sha256(data).digest()


class Region(ctypes.Structure):
    """struct sha256_region (verify.c)."""
    _fields_ = [("start", ctypes.c_uint64), ("bufsz", ctypes.c_uint64), ("memsz", ctypes.c_uint64),
                ("digest", ctypes.c_uint8 * 32)]


def run_verify(lib: ctypes.CDLL, memory: list[bytes], bufsz: list[int], digests: list[bytes]) -> int:
    """Each of ``memory`` is a segment as loaded (memsz bytes): ``bufsz`` of them written, the rest zero-filled."""
    regions = (Region * 16).in_dll(lib, "purgatory_sha256_regions")
    keep = [ctypes.create_string_buffer(m, len(m)) for m in memory]
    for i in range(16):
        regions[i] = (Region(ctypes.addressof(keep[i]), bufsz[i], len(memory[i]), (ctypes.c_uint8 * 32)(*digests[i]))
                      if i < len(memory) else Region())
    return lib.purgatory_verify_sha256()


def test_verify_accepts_the_right_digests_and_rejects_a_change(native: ctypes.CDLL) -> None:
    # Like a plan: each segment's buffer followed by zeros up to its memsz; odd sizes and offsets
    # for the zero check's unaligned ends.
    bufs = [os.urandom(5001), os.urandom(8192), b"dtb" + os.urandom(13)]
    memory = [bufs[0] + bytes(3192), bufs[1], bufs[2] + bytes(4077)]
    sizes = [len(b) for b in bufs]
    digests = [hashlib.sha256(b).digest() for b in bufs]
    assert run_verify(native, memory, sizes, digests) == 0
    tampered = [memory[0], memory[1][:-1] + b"\x01", memory[2]]
    assert run_verify(native, tampered, sizes, digests) == 1
    assert run_verify(native, memory, sizes, [digests[0], bytes(32), digests[2]]) == 1
    for at in (5001, 5007, 5008, len(memory[0]) - 1):      # the zero fill is covered too
        dirty = memory[0][:at] + b"\x80" + memory[0][at + 1:]
        assert run_verify(native, [dirty, *memory[1:]], sizes, digests) == 1, at
    assert run_verify(native, memory, [sizes[0], sizes[1], len(memory[2]) + 1], digests) == 1   # bufsz > memsz


def test_verify_passes_when_every_region_is_empty(native: ctypes.CDLL) -> None:
    """--skip-sha256: the linker leaves every region zero."""
    assert run_verify(native, [], [], []) == 0


@pytest.mark.parametrize("target", ["ARM64", "X86_64"])
def test_sources_build_warning_free_with_the_makefile_flags(target: str, tmp_path: Path) -> None:
    cc = make_variable(f"{target}_CC")[0]
    need_tool(cc)
    for src in SOURCES:
        subprocess.run([cc, *make_variable(f"{target}_CFLAGS"), "-c", str(src), "-o", str(tmp_path / "x.o")],
                       cwd=REPO, check=True)


def test_shipped_aarch64_object_under_qemu_user(tmp_path: Path) -> None:
    """The prebuilt purgatory.ro's own sha256 and check, linked into a static aarch64 program."""
    gcc = need_tool("aarch64-linux-gnu-gcc")
    qemu = oracle("qemu-aarch64-static", "qemu-user-static")
    need_cross_libc()
    harness = tmp_path / "harness"
    subprocess.run([gcc, "-static", "-O1", f"-I{COMMON}", "-o", str(harness),
                    str(Path(__file__).with_name("sha256_harness.c")), PURGATORY_FILE], check=True)
    files = []
    rng = random.Random(3)
    for i, size in enumerate([0x2010000 // 64, 4097, 0, 64]):
        path = tmp_path / f"seg{i}"
        path.write_bytes(rng.randbytes(size))
        files.append(path)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]

    def run(*args: str) -> str:
        return subprocess.run([qemu, str(harness), *args], capture_output=True, text=True, check=True,
                              timeout=120).stdout.strip()

    def verify(mode: str, hexdigests: list[str]) -> str:
        return run(mode, *(a for pair in zip(hexdigests, map(str, files)) for a in pair))

    assert verify("intact", digests) == "verify=0"
    assert verify("intact", [digests[0], "00" * 32, *digests[2:]]) == "verify=1"
    assert verify("dirty-fill", digests) == "verify=1"        # a byte in a zero fill changed
    assert run("-") == "verify=0"                              # --skip-sha256: no regions
