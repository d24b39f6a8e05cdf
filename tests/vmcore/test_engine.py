"""The zlib page engines (kexecfw/vmcore/zlibengine.py): what the fast engine and the standard library's
fallback write is read back identically by kexecfw, makedumpfile (a flattened -R round trip) and drgn;
each missing package leaves a named engine that writes zlib streams; the engine that ran is reported."""
from __future__ import annotations

import json
import os
import platform
import random
import struct
import subprocess
import sys
import zlib

import pytest

from conftest import ARCHES
from kexecfw.errors import BadInputError
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcore.writer import DumpWriter, flatten
from kexecfw.vmcore.zlibengine import ENGINE_ENV, RETRY_BELOW, RETRY_FROM, zlib_engine
from tests.conftest import oracle, oracle_module

ENGINES = ["auto", "stdlib"]
# the fast engine's packages are dependencies where PyPI has wheels for them
FAST_HERE = platform.machine() in ("x86_64", "aarch64")


def save(src, out, engine: str, monkeypatch, level: int = 31) -> dict:
    monkeypatch.setenv(ENGINE_ENV, engine)
    with open_dump(str(src)) as dump:
        return DumpWriter(dump, level, "zlib").write(str(out))


def assert_same_kept_pages(dump_path, src_path, pages_written: int | None = None) -> None:
    """Every page the dump holds is the source's page, byte for byte."""
    with open_dump(str(dump_path)) as k, open_dump(str(src_path)) as src:
        ps = k.page_size
        held = [pfn for pfn in range(k.max_pfn()) if k.has_page(pfn)]
        assert held, "the dump holds no page"
        for pfn in held:
            assert k.read_page(pfn) == src.read_phys(pfn * ps, ps), f"pfn {pfn:#x} differs"
    if pages_written is not None:
        assert len(held) == pages_written


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("engine", ENGINES)
def test_kexecfw_reads_back_every_kept_page(arch, engine, mini_vmcores, expected_dmesg, tmp_path, monkeypatch):
    out = tmp_path / "dump.kdump"
    stats = save(mini_vmcores[arch], out, engine, monkeypatch)
    assert stats["compression"] == "zlib"
    assert_same_kept_pages(out, mini_vmcores[arch], stats["pages_written"])
    with open_dump(str(out)) as k:
        assert k.compression == "zlib" and not k.incomplete
        assert dmesg_bytes(KernelMemory(k)) == expected_dmesg[arch]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("engine", ENGINES)
def test_flattened_and_rearranged_by_makedumpfile_is_the_same_dump(arch, engine, mini_vmcores, expected_dmesg,
                                                                    tmp_path, monkeypatch):
    """makedumpfile -R rebuilds our flattened stream byte for byte. (makedumpfile --dump-dmesg and its
    re-dump of our file need the page tables and mem_section the mini vmcores lack: they run on the lab's
    full dumps, tests/vmcore/test_lab_dumps.py, whose re-save uses this same default engine.)"""
    makedumpfile = oracle("makedumpfile", "makedumpfile")
    out = tmp_path / "dump.kdump"
    save(mini_vmcores[arch], out, engine, monkeypatch)
    flat = tmp_path / "dump.flat"
    fd = os.open(flat, os.O_WRONLY | os.O_CREAT, 0o600)
    flatten(str(out), fd)
    os.close(fd)
    rebuilt = tmp_path / "rebuilt.kdump"
    with open(flat, "rb") as stdin:
        subprocess.run([makedumpfile, "-R", str(rebuilt)], stdin=stdin, check=True, capture_output=True)
    assert rebuilt.read_bytes() == out.read_bytes()
    assert_same_kept_pages(rebuilt, mini_vmcores[arch])
    with open_dump(str(flat)) as k:
        assert dmesg_bytes(KernelMemory(k)) == expected_dmesg[arch]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("engine", ENGINES)
def test_drgn_reads_every_kept_page(arch, engine, mini_vmcores, tmp_path, monkeypatch):
    drgn = oracle_module("drgn", "pip install -e '.[oracles]'")
    out = tmp_path / "dump.kdump"
    save(mini_vmcores[arch], out, engine, monkeypatch)
    prog = drgn.Program()
    prog.set_core_dump(str(out))
    with open_dump(str(out)) as k, open_dump(str(mini_vmcores[arch])) as src:
        ps = k.page_size
        held = [pfn for pfn in range(k.max_pfn()) if k.has_page(pfn)]
        for pfn in held:
            assert prog.read(pfn * ps, ps, True) == src.read_phys(pfn * ps, ps)


def _offset_table_page(seed: int) -> bytes:
    """A page like the kernel's unwind and offset tables: 32-bit values sharing their top bytes (what
    ISA-L level 1, with no match under 4 bytes, compresses worst)."""
    rng = random.Random(seed)
    out = bytearray()
    top = 0xFE95
    while len(out) < 4096:
        out += bytes([rng.randrange(256), rng.randrange(0x60, 0x70)]) + struct.pack("<H", top)
        top += rng.random() < 0.05
    return bytes(out[:4096])


def test_the_retry_keeps_the_smaller_valid_stream():
    if not FAST_HERE:
        pytest.skip(f"no fast engine wheels for {platform.machine()}")
    from isal import isal_zlib
    compress = zlib_engine("auto").make()
    lo, hi = RETRY_FROM * 4096, RETRY_BELOW * 4096
    band = [p for p in map(_offset_table_page, range(20)) if lo <= len(isal_zlib.compress(p, 1)) < hi]
    assert band, "no offset-table page lands in the retry band: the band no longer fits ISA-L's output"
    for page in band:
        out = compress(page)
        assert zlib.decompress(out) == page
        assert len(out) < len(isal_zlib.compress(page, 1))     # the retry won on such pages
    plain = bytes(range(256)) * 16                           # far below the band: ISA-L's stream as is
    assert compress(plain) == isal_zlib.compress(plain, 1)


@pytest.mark.parametrize("hidden", [(), ("deflate",), ("isal",), ("isal", "deflate")])
def test_each_missing_package_leaves_a_named_engine_writing_zlib(hidden, mini_vmcores, monkeypatch):
    """Where a wheel is missing (riscv64 has neither) the engine falls back and says so; its pages are
    zlib streams all the same."""
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)       # the import fails as if not installed
        if name == "isal":
            monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    engine = zlib_engine("auto")
    if "isal" not in hidden and FAST_HERE:
        assert engine.name.startswith("isal ")
        assert ("zlib " in engine.name) == ("deflate" in hidden)
    if "isal" in hidden:
        assert not engine.name.startswith("isal")
        expected = "zlib " if "deflate" in hidden or not FAST_HERE else "libdeflate "
        assert engine.name.startswith(expected)
    compress = engine.make()
    with open_dump(str(mini_vmcores["x86_64"])) as src:
        for r in src.ranges():
            for at in range(r.start, r.end - 4095, 4096):
                page = src.read_phys(at, 4096)
                assert zlib.decompress(compress(page)) == page


def test_stdlib_is_forced_by_the_environment_and_a_typo_is_one_line(monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "stdlib")
    assert zlib_engine().name == f"zlib {zlib.ZLIB_RUNTIME_VERSION} level 1"
    monkeypatch.setenv(ENGINE_ENV, "fastest")
    with pytest.raises(BadInputError, match=ENGINE_ENV):
        zlib_engine()


@pytest.mark.parametrize("engine", ENGINES)
def test_the_engine_that_ran_is_in_the_json_and_the_summary_line(engine, mini_vmcores, tmp_path):
    env = {**os.environ, ENGINE_ENV: engine}
    cmd = [sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(mini_vmcores["x86_64"])]
    done = subprocess.run(cmd + [str(tmp_path / "a.kdump"), "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if engine == "stdlib":
        assert report["engine"] == f"zlib {zlib.ZLIB_RUNTIME_VERSION} level 1"
    elif FAST_HERE:
        assert report["engine"].startswith("isal ") and "libdeflate" in report["engine"]
    done = subprocess.run(cmd + [str(tmp_path / "b.kdump")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"zlib: {report['engine']})" in done.stdout
