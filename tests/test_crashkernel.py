"""crashkernel= parsing (the kernel's rules, case by case) and the reservation estimate."""
from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys

import pytest

from kexecfw import crashkernel as ck
from kexecfw.errors import BadInputError

M = 1 << 20
G = 1 << 30


@pytest.mark.parametrize("text,value,end", [
    ("64M", 64 * M, 3), ("0x1000", 0x1000, 6), ("010", 8, 3), ("1g", G, 2), ("2T", 2 << 40, 2),
    ("0", 0, 1), ("12K@", 12 << 10, 3), ("abc", 0, 0), ("1E", 1 << 60, 2), ("0x", 0, 1),
])
def test_memparse_like_the_kernel(text, value, end):
    assert ck.memparse(text) == (value, end)


@pytest.mark.parametrize("cmdline,ram,size,base,form", [
    ("crashkernel=256M", 2 * G, 256 * M, None, "simple"),
    ("crashkernel=256M@16M", 2 * G, 256 * M, 16 * M, "simple"),
    ("root=/dev/sda crashkernel=128M quiet crashkernel=384M", 2 * G, 384 * M, None, "simple"),   # last wins
    # RAM is rounded up to 128 MiB before matching: 1900 MiB -> 1920, 2047 MiB -> 2048
    ("crashkernel=512M-2G:64M,2G-:128M", 2047 * M, 128 * M, None, "ranges"),
    ("crashkernel=512M-2G:64M,2G-:128M", 1900 * M, 64 * M, None, "ranges"),
    ("crashkernel=512M-2G:64M,2G-:128M", 256 * M, 0, None, "ranges"),
    ("crashkernel=1G-4G:192M,4G-:256M@16M", 8 * G, 256 * M, 16 * M, "ranges"),
    ("crashkernel=1G-:192M crashkernel=300M,high", 2 * G, 192 * M, None, "ranges"),
])
def test_parse_cases(cmdline, ram, size, base, form):
    res = ck.parse(cmdline, ram)
    assert (res.size, res.base, res.form) == (size, base, form)


def test_high_and_low():
    res = ck.parse("crashkernel=1G,high", 8 * G, "x86_64")
    assert res.high and res.size == G and res.low == 256 * M and res.low_default
    res = ck.parse("crashkernel=1G,high", 8 * G, "arm64")
    assert res.low == 128 * M
    res = ck.parse("crashkernel=1G,high crashkernel=72M,low", 8 * G)
    assert res.low == 72 * M and not res.low_default
    # a plain form takes precedence over ,high, whatever the order
    res = ck.parse("crashkernel=256M crashkernel=1G,high", 8 * G)
    assert not res.high and res.size == 256 * M


@pytest.mark.parametrize("cmdline,message", [
    ("crashkernel=abc", "memory value expected"),
    ("crashkernel=64Mx", "unrecognized char: 'x'"),
    ("crashkernel=64M\n1", r"unrecognized char: '\\n'$"),     # one line, however the char prints (fuzz)
    ("crashkernel=2G-1G:64M", "end <= start"),
    ("crashkernel=1G:64M", "'-' expected"),
    ("crashkernel=1G-2Gx:64M", "':' expected"),
    ("crashkernel=1G-2G-64M", "unrecognized char: '-'"),
    ("crashkernel=1G-:4G", "invalid size"),
    ("crashkernel=64M@", "expected after '@'"),
])
def test_errors_are_the_kernels(cmdline, message):
    with pytest.raises(BadInputError, match=message):
        ck.parse(cmdline, 2 * G)


def _bzimage(init_size: int) -> bytes:
    data = bytearray(0x4000)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, 0x20F)
    struct.pack_into("<I", data, 0x260, init_size)
    return bytes(data)


def _arm64_image(image_size: int) -> bytes:
    head = bytearray(64)
    struct.pack_into("<Q", head, 16, image_size)
    head[56:60] = b"ARM\x64"
    return bytes(head) + bytes(4096)


def test_estimate_formula(tmp_path):
    k = tmp_path / "bzImage"
    k.write_bytes(_bzimage(48 * M))
    payload = bytes(range(256)) * 40960          # 10 MiB unpacked
    i = tmp_path / "initrd.gz"
    i.write_bytes(gzip.compress(payload))
    est = ck.estimate(str(k), str(i), cpus=2, ram=4 * G)
    assert est["kernel"] == 48 * M and est["kernel_source"] == "bzImage init_size"
    assert est["initrd_uncompressed"] == len(payload)
    expected = (48 * M + i.stat().st_size + len(payload) + 64 * M + 2 * M + 4 * G // 16384) / (1 - 64 / 4096)
    assert est["total"] == ck.roundup(int(expected), 16 * M) and est["total"] % (16 * M) == 0
    a = tmp_path / "Image.gz"
    a.write_bytes(gzip.compress(_arm64_image(33 * M)))
    assert ck.kernel_memory(str(a)) == (33 * M, "arm64 Image image_size")


def test_cli(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "kexecfw", *a], capture_output=True, text=True)
    r = run("crashkernel", "parse", "crashkernel=512M-2G:64M,2G-:128M", "--ram", "2047M", "--json")
    doc = json.loads(r.stdout)
    assert doc["size"] == 128 * M and doc["matched_range"] == ["0x80000000", None]
    r = run("--arch", "arm64", "crashkernel", "parse", "crashkernel=1G,high", "--ram", "8G")
    assert "128 MiB (architecture default)" in r.stdout
    r = run("crashkernel", "parse", "crashkernel=1G-:4G", "--ram", "3G")
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "invalid size" in r.stderr
    k = tmp_path / "bzImage"
    k.write_bytes(_bzimage(40 * M))
    r = run("crashkernel", "estimate", "--kernel", str(k), "--json")
    assert json.loads(r.stdout)["crashkernel"] == "112M"
