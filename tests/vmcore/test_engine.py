"""The zlib page engines (kexecfw/vmcore/zlibengine.py): what each engine (forced, or chosen by ``auto``
on the dump's first pages) writes is read back identically by kexecfw, makedumpfile (a flattened -R
round trip) and drgn; each missing package leaves the others; the engine that ran is reported.
(The choice itself, from given timings and sizes: test_zlibengine_choice.py.)"""
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
from kexecfw.vmcore.zlibengine import ENGINE_ENV, RETRY_BELOW, RETRY_FROM, SAMPLE_PAGES, zlib_engine
from tests.conftest import oracle, oracle_module

ENGINES = ["auto", "isal", "libdeflate", "stdlib"]
# the fast engine's packages are dependencies where PyPI has wheels for them
FAST_HERE = platform.machine() in ("x86_64", "aarch64")


def need(engine: str) -> None:
    if engine in ("isal", "libdeflate") and not FAST_HERE:
        pytest.skip(f"no {engine} wheel for {platform.machine()}")


def save(src, out, engine: str, monkeypatch, level: int = 31) -> dict:
    need(engine)
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


@pytest.mark.parametrize("engine", ["isal", "libdeflate"])
def test_the_retry_keeps_the_smaller_valid_stream(engine):
    need(engine)
    if engine == "isal":
        from isal.isal_zlib import compress as level1
    else:
        from deflate import zlib_compress as level1

    def first(page: bytes) -> bytes:
        return level1(page, 1)
    compress = zlib_engine(engine).make()
    lo, hi = RETRY_FROM * 4096, RETRY_BELOW * 4096
    band = [p for p in map(_offset_table_page, range(40)) if lo <= len(first(p)) < hi]
    assert band, f"no offset-table page lands in the retry band: the band no longer fits {engine}'s output"
    assert any(len(compress(page)) < len(first(page)) for page in band)   # the retry won on some
    for page in band:
        out = compress(page)
        assert zlib.decompress(out) == page
        assert len(out) <= len(first(page))
    plain = bytes(range(256)) * 16                           # far below the band: level 1's stream as is
    assert compress(plain) == first(plain)


def test_auto_times_the_first_pages_and_says_so(mini_vmcores, tmp_path, monkeypatch):
    """The mini vmcore has enough non-zero pages for ``auto`` to decide (the round trips above then cover
    its sample pages and the rest); it says so, with the sample's figures."""
    stats = save(mini_vmcores["x86_64"], tmp_path / "dump.kdump", "auto", monkeypatch)
    assert f"(auto, timed on {SAMPLE_PAGES} pages: " in stats["engine"]
    assert "stdlib " in stats["engine"] and "x of zlib level 1's size)" in stats["engine"]
    if FAST_HERE:
        assert "isal " in stats["engine"] and "libdeflate " in stats["engine"]


@pytest.mark.parametrize("hidden", [(), ("deflate",), ("isal",), ("isal", "deflate")])
def test_each_missing_package_leaves_the_others_as_candidates(hidden, mini_vmcores, monkeypatch):
    """Where a wheel is missing (riscv64 has neither) ``auto`` chooses among the others (the standard
    library always), forcing it is one line naming the package, and every engine left writes zlib."""
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)       # the import fails as if not installed
        if name == "isal":
            monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    installed = [] if not FAST_HERE else [k for k, pkg in (("isal", "isal"), ("libdeflate", "deflate"))
                                          if pkg not in hidden]
    auto = zlib_engine("auto")
    assert [c.key for c in auto.candidates] == installed + ["stdlib"]
    if FAST_HERE and "isal" not in hidden:
        assert ("zlib " in zlib_engine("isal").name) == ("deflate" in hidden)    # its retry falls back
    for key, package in (("isal", "isal"), ("libdeflate", "deflate")):
        if key not in installed and package in hidden:
            with pytest.raises(BadInputError, match=f"{ENGINE_ENV}={key} needs the {package} module"):
                zlib_engine(key)
    with open_dump(str(mini_vmcores["x86_64"])) as src:
        pages = [src.read_phys(at, 4096) for r in src.ranges() for at in range(r.start, r.end - 4095, 4096)]
    for engine in [auto] + [zlib_engine(k) for k in installed]:
        compress = engine.make()
        for page in pages:
            assert zlib.decompress(compress(page)) == page


def test_stdlib_is_forced_by_the_environment_and_a_typo_is_one_line(monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "stdlib")
    assert zlib_engine().name == f"zlib {zlib.ZLIB_RUNTIME_VERSION} level 1"
    monkeypatch.setenv(ENGINE_ENV, "fastest")
    with pytest.raises(BadInputError, match=ENGINE_ENV):
        zlib_engine()


@pytest.mark.parametrize("engine", ENGINES)
def test_the_engine_that_ran_is_in_the_json_and_the_summary_line(engine, mini_vmcores, tmp_path):
    need(engine)
    env = {**os.environ, ENGINE_ENV: engine}
    cmd = [sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(mini_vmcores["x86_64"])]
    done = subprocess.run(cmd + [str(tmp_path / "a.kdump"), "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if engine == "stdlib":
        assert report["engine"] == f"zlib {zlib.ZLIB_RUNTIME_VERSION} level 1"
    elif engine == "auto":
        assert f"(auto, timed on {SAMPLE_PAGES} pages: " in report["engine"]
    else:
        assert report["engine"].startswith({"isal": "isal ", "libdeflate": "libdeflate "}[engine])
        assert "auto" not in report["engine"]
    done = subprocess.run(cmd + [str(tmp_path / "b.kdump")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if engine == "auto":        # the figures, and on close calls the choice, differ from run to run
        assert "zlib: " in done.stdout and f"(auto, timed on {SAMPLE_PAGES} pages: " in done.stdout
    else:
        assert f"zlib: {report['engine']})" in done.stdout
