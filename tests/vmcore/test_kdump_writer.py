"""Saving dumps: kdump-compressed and ELF output of real vmcores, read back by us, drgn and makedumpfile."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import ARCHES
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.kdumpfmt import DISK_DUMP_HEADER, DUMP_DH_COMPRESSED_INCOMPLETE, KDUMP_SUB_HEADER
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcore.writer import DumpIncomplete, DumpWriter, flatten
from tests.conftest import oracle, oracle_module

CODECS = ["zlib", "zstd", "none", "lzo"]


def need_codec(codec: str) -> None:
    """lzo pages need the optional python-lzo (the capture extra): without it a loud skip, not a missing test."""
    if codec == "lzo":
        oracle_module("lzo", "pip install -e '.[capture]' (python-lzo; needs liblzo2-dev)")


def save(src, out, **kw):
    with open_dump(str(src)) as dump:
        return DumpWriter(dump, **kw).write(str(out))


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("level", [0, 1, 31])
def test_roundtrip_keeps_memory_and_dmesg(arch, codec, level, mini_vmcores, expected_dmesg, tmp_path):
    need_codec(codec)
    out = tmp_path / "dump.kdump"
    stats = save(mini_vmcores[arch], out, dump_level=level, compress=codec, threads=2)
    assert stats["pages_written"] == stats["pages_planned"] > 100
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["dump.kdump"]           # no temp file left behind
    with open_dump(str(out)) as k, open_dump(str(mini_vmcores[arch])) as src:
        assert k.format == "kdump" and k.compression == codec and k.dump_level == level
        assert not k.incomplete
        assert dmesg_bytes(KernelMemory(k)) == expected_dmesg[arch]
        assert k.notes == [n._replace(offset=k.notes[i].offset) for i, n in enumerate(src.notes)]
        for r in src.ranges():
            assert k.read_phys(r.start, r.end - r.start) == src.read_phys(r.start, r.end - r.start)
    raw = out.read_bytes()
    head = DISK_DUMP_HEADER.unpack_from(raw)
    assert head[0] == b"KDUMP   " and head[1] == 6 and not head[5] & DUMP_DH_COMPRESSED_INCOMPLETE
    assert head[2][130:].startswith(b"6.1.0-56")                      # utsname.release
    sub = KDUMP_SUB_HEADER.unpack_from(raw, head[6])
    assert raw[sub[5]:sub[5] + 10] == b"OSRELEASE="                  # offset_vmcoreinfo


@pytest.mark.parametrize("arch", ARCHES)
def test_drgn_reads_what_we_wrote(arch, mini_vmcores, tmp_path):
    drgn = oracle_module("drgn", "pip install -e '.[oracles]'")
    for codec in CODECS:
        need_codec(codec)
        out = tmp_path / f"{codec}.kdump"
        save(mini_vmcores[arch], out, dump_level=31, compress=codec)
        prog = drgn.Program()
        prog.set_core_dump(str(out))
        with open_dump(str(mini_vmcores[arch])) as src:
            for r in src.ranges():
                assert prog.read(r.start, r.end - r.start, True) == src.read_phys(r.start, r.end - r.start)


@pytest.mark.parametrize("arch", ARCHES)
def test_flattened_reader_and_makedumpfile_rearrange(arch, mini_vmcores, expected_dmesg, tmp_path):
    out = tmp_path / "dump.kdump"
    save(mini_vmcores[arch], out, dump_level=31, compress="zlib")
    flat = tmp_path / "dump.flat"
    fd = os.open(flat, os.O_WRONLY | os.O_CREAT, 0o600)
    flatten(str(out), fd)
    os.close(fd)
    with open_dump(str(flat)) as k:
        assert k.format == "flattened-kdump"
        assert dmesg_bytes(KernelMemory(k)) == expected_dmesg[arch]
    rebuilt = tmp_path / "rebuilt.kdump"
    with open(flat, "rb") as stdin:
        subprocess.run([oracle("makedumpfile", "makedumpfile"), "-R", str(rebuilt)], stdin=stdin, check=True,
                       capture_output=True)
    assert rebuilt.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("arch", ARCHES)
def test_elf_output(arch, mini_vmcores, expected_dmesg, tmp_path):
    out = tmp_path / "dump.elf"
    save(mini_vmcores[arch], out, dump_level=31, elf=True)
    with open_dump(str(out)) as e:
        assert e.format == "elf"
        assert dmesg_bytes(KernelMemory(e)) == expected_dmesg[arch]
    ref = subprocess.run([oracle("vmcore-dmesg", "kexec-tools"), str(out)], capture_output=True, check=True).stdout
    assert ref == expected_dmesg[arch]


def _small_fs(tmp_path, size_kib: int):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    return mnt


def test_full_disk_marks_dump_incomplete(mini_vmcores, tmp_path):
    mnt = _small_fs(tmp_path, 160)       # header + bitmaps take 140 KiB, the whole dump 180 KiB
    try:
        out = mnt / "vmcore"
        with pytest.raises(DumpIncomplete) as exc:
            save(mini_vmcores["x86_64"], out, dump_level=31, compress="zlib")
        assert exc.value.exit_code == 6
        assert not out.exists()
        part = mnt / "vmcore.incomplete"
        assert part.exists() and stat.S_IMODE(part.stat().st_mode) == 0o600
        head = DISK_DUMP_HEADER.unpack_from(part.read_bytes())
        assert head[5] & DUMP_DH_COMPRESSED_INCOMPLETE
        with open_dump(str(part)) as k:
            assert k.incomplete and 0 < k.dumped_pages < 157
            # every page the bitmap claims is readable: the descriptors match what was written
            for r in k.ranges():
                k.read_phys(r.start, r.end - r.start)
        # the CLI says so with exit code 6 and one line
        r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(mini_vmcores["x86_64"]),
                            str(mnt / "again")], capture_output=True, text=True)
        assert r.returncode == 6 and "incomplete" in r.stderr and "Traceback" not in r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_file_size_limit_marks_dump_incomplete(mini_vmcores, tmp_path):
    """RLIMIT_FSIZE: writes past the limit fail with EFBIG (SIGXFSZ ignored by the writer)."""
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (230 * 1024, 230 * 1024))\n"
        "from kexecfw.cli import main\n"
        f"sys.exit(main(['vmcore', 'save', '-i', {str(mini_vmcores['arm64'])!r}, {str(tmp_path / 'v')!r}]))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 6, r.stderr
    assert (tmp_path / "v.incomplete").exists() and not (tmp_path / "v").exists()
    with open_dump(str(tmp_path / "v.incomplete")) as k:
        assert k.incomplete and 0 < k.dumped_pages < 156


def test_incomplete_dump_without_bitmaps_is_a_clear_error(mini_vmcores, tmp_path):
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))\n"
        "from kexecfw.cli import main\n"
        f"sys.exit(main(['vmcore', 'save', '-i', {str(mini_vmcores['arm64'])!r}, {str(tmp_path / 'v')!r}]))\n")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 6
    r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "info", str(tmp_path / "v.incomplete")],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "incomplete dump" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("elf", [False, True])
def test_cut_short_input_saves_what_is_there_marked_incomplete(mini_vmcores, tmp_path, elf):
    """A vmcore copy cut short (disk full, interrupted copy) is saved, but never called complete;
    nor is a copy of that copy."""
    data = mini_vmcores["x86_64"].read_bytes()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[:len(data) * 3 // 5])
    out = tmp_path / "v"
    r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(cut), str(out)]
                       + (["--elf"] if elf else []), capture_output=True, text=True)
    assert r.returncode == 6, r.stderr
    assert "cut short" in r.stderr and "marked incomplete" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "v.incomplete").exists() and not out.exists()
    with open_dump(str(tmp_path / "v.incomplete")) as k:
        if not elf:     # (an ELF output has no flag: its name says it)
            assert k.incomplete and k.dumped_pages > 0 and k.missing_memory() is not None
            with pytest.raises(DumpIncomplete, match="marked incomplete"):
                DumpWriter(k).write(str(tmp_path / "again"))
            assert (tmp_path / "again.incomplete").exists()
    with open_dump(str(mini_vmcores["x86_64"])) as whole:
        assert whole.missing_memory() is None


def test_save_flow_directory_summary_and_keep(mini_vmcores, expected_dmesg, tmp_path):
    base = tmp_path / "crash"
    run = lambda: subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-i",
                                  str(mini_vmcores["arm64"]), "--dir", str(base), "--keep", "2",
                                  "--min-free", "1M", "--json"], capture_output=True, text=True, check=True)
    docs = [json.loads(run().stdout) for _ in range(3)]
    dirs = sorted(os.listdir(base))
    assert len(dirs) == 2 and docs[-1]["removed"]
    last = base / dirs[-1]
    assert sorted(os.listdir(last)) == ["dmesg.txt", "summary.json", "vmcore.kdump"]
    assert (last / "dmesg.txt").read_bytes() == expected_dmesg["arm64"]
    summary = json.loads((last / "summary.json").read_text())
    assert summary["complete"] and summary["panic_cpu"] == 2 and summary["osrelease"] == "6.1.0-56-arm64"
    assert summary["dump"]["pages_written"] > 100 and len(summary["cpus"]) == 4


def test_save_flow_refuses_below_floor(mini_vmcores, tmp_path):
    r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(mini_vmcores["arm64"]),
                        "--dir", str(tmp_path), "--min-free", "1000T"], capture_output=True, text=True)
    assert r.returncode == 4 and "floor" in r.stderr


def test_save_flow_floor_stops_the_dump(mini_vmcores, tmp_path):
    mnt = _small_fs(tmp_path, 1024)
    try:
        r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "save", "-i", str(mini_vmcores["x86_64"]),
                            "--dir", str(mnt), "--min-free", "900K"], capture_output=True, text=True)
        assert r.returncode == 6, r.stderr
        (d,) = os.listdir(mnt)
        summary = json.loads((mnt / d / "summary.json").read_text())
        assert summary["complete"] is False and (mnt / d / "dmesg.txt").exists()
        assert (mnt / d / "vmcore.kdump.incomplete").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("level", [1, 31])
def test_one_thread_compresses_inline_to_the_same_dump(arch, level, mini_vmcores, tmp_path, monkeypatch):
    """threads=1 (a capture kernel with one CPU) compresses without a pool: same file, header time aside.
    (One engine forced: ``auto`` may choose differently from run to run, on close timings.)"""
    monkeypatch.setenv("KEXECFW_ZLIB_ENGINE", "stdlib")
    one, two = tmp_path / "one.kdump", tmp_path / "two.kdump"
    save(mini_vmcores[arch], one, dump_level=level, compress="zlib", threads=1)
    save(mini_vmcores[arch], two, dump_level=level, compress="zlib", threads=2)
    a, b = one.read_bytes(), two.read_bytes()
    page = DISK_DUMP_HEADER.unpack_from(a)[6]          # block_size: the header is the first block
    assert len(a) == len(b) and a[page:] == b[page:]


@pytest.mark.parametrize("elf", [False, True])
def test_progress_in_a_log_is_plain_lines(elf, mini_vmcores, tmp_path):
    """`--progress always` to a log (not a terminal): kexecfw.progress's plain lines, the phase, the page
    counter and the total at the end, on stderr only."""
    args = ["-m", "kexecfw", "vmcore", "save", "-i", str(mini_vmcores["x86_64"]), "--progress", "always",
            *(["--elf"] if elf else []), str(tmp_path / "out")]
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # the cut-down fixture has no struct pages: the one warning saying so comes after the progress
    lines = [line for line in run.stderr.splitlines() if "were kept unfiltered" not in line]
    assert lines[0].endswith("] saving") and all(line.startswith("vmcore save: ") for line in lines)
    assert "\r" not in run.stderr and lines[-1].startswith("vmcore save: 157 of 157 pages in ")
    assert run.stdout.startswith("saved ")
