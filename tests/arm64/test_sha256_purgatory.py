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

from kexecfw.plugins.arm64 import PURGATORY_OBJECT
from tests.arm64.conftest import need_tool
from tests.conftest import REPO

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
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def run_verify(lib: ctypes.CDLL, buffers: list[bytes], digest: bytes) -> int:
    regions = (Region * 16).in_dll(lib, "purgatory_sha256_regions")
    expected = (ctypes.c_uint8 * 32).in_dll(lib, "purgatory_sha256_digest")
    keep = [ctypes.create_string_buffer(b, len(b)) for b in buffers]
    for i in range(16):
        regions[i].start, regions[i].len = ((ctypes.addressof(keep[i]), len(buffers[i])) if i < len(buffers)
                                            else (0, 0))
    for i in range(32):
        expected[i] = digest[i]
    return lib.purgatory_verify_sha256()


def test_verify_accepts_the_right_digest_and_rejects_a_change(native: ctypes.CDLL) -> None:
    # Like a plan: each segment's buffer followed by zeros up to its memsz.
    segments = [os.urandom(5000) + bytes(3192), os.urandom(8192), b"dtb" + bytes(4093)]
    digest = hashlib.sha256(b"".join(segments)).digest()
    assert run_verify(native, segments, digest) == 0
    tampered = [segments[0], segments[1][:-1] + b"\x01", segments[2]]
    assert run_verify(native, tampered, digest) == 1
    assert run_verify(native, segments, bytes(32)) == 1


def test_verify_passes_when_every_region_is_empty(native: ctypes.CDLL) -> None:
    """--skip-sha256: the linker leaves regions and digest zero."""
    assert run_verify(native, [], bytes(32)) == 0


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
    qemu = need_tool("qemu-aarch64-static")
    if not Path("/usr/aarch64-linux-gnu/lib/libc.a").exists():
        pytest.skip("libc6-dev-arm64-cross is not installed (see setup.sh)")
    harness = tmp_path / "harness"
    subprocess.run([gcc, "-static", "-O1", f"-I{COMMON}", "-o", str(harness),
                    str(Path(__file__).with_name("sha256_harness.c")), str(PURGATORY_OBJECT)], check=True)
    files = []
    rng = random.Random(3)
    for i, size in enumerate([0x2010000 // 64, 4097, 0, 64]):
        path = tmp_path / f"seg{i}"
        path.write_bytes(rng.randbytes(size))
        files.append(path)
    whole = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    def run(digest: str) -> str:
        return subprocess.run([qemu, str(harness), digest, *map(str, files)], capture_output=True, text=True,
                              check=True, timeout=120).stdout.strip()

    assert run(whole) == f"verify=0 sha256={whole}"
    assert run("00" * 32) == f"verify=1 sha256={whole}"
    assert run("-") == f"verify=0 sha256={whole}"
