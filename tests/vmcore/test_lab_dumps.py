"""Full dumps from the QEMU lab (kexecfw lab run): real /proc/vmcore saves by kexecfw and makedumpfile.

Runs on the lab's own arm64 and x86_64 panic runs of this session (slow: booted once and shared
with tests/lab through kexecfw.lab.shared.run_once), and on any earlier results in
$KEXECFW_LAB_RESULTS (directories separated by ':') or lab-results/*/ that hold dump/*.kdump with
capture/vmcore-dmesg.txt. Checks, on each:

* our dmesg of every dump (ours and makedumpfile's) equals vmcore-dmesg's of /proc/vmcore;
* for x86_64 (Debian's makedumpfile here is x86_64 only), a dump re-saved by us opens in
  ``makedumpfile --dump-dmesg`` with the same log as makedumpfile's own dump;
* kexecfw's and makedumpfile's -d 31 dumps agree on which pages exist, and our page
  classification keeps what makedumpfile keeps (up to a small tolerance for page state
  the two read at slightly different points of the capture).
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.kmem import EM_X86_64, KernelMemory
from kexecfw.vmcore.writer import DumpWriter
from tests.conftest import oracle
from tests.labruns import shared_lab_run


def lab_dirs() -> list[str]:
    roots = [p for p in os.environ.get("KEXECFW_LAB_RESULTS", "").split(os.pathsep) if p]
    roots += sorted(glob.glob(str(REPO / "lab-results" / "*")))
    return [r for r in roots
            if glob.glob(os.path.join(r, "dump", "*.kdump")) and os.path.isfile(os.path.join(r, "capture",
                                                                                         "vmcore-dmesg.txt"))]


SOURCES = [pytest.param(f"run:{arch}", id=f"lab-{arch}", marks=pytest.mark.slow) for arch in ("arm64", "x86_64")]
SOURCES += [pytest.param(d, id=os.path.basename(d)) for d in lab_dirs()]


@pytest.fixture(params=SOURCES)
def d(request: pytest.FixtureRequest) -> str:
    """A lab results directory: this session's run (booted once, shared) or an earlier one."""
    if not request.param.startswith("run:"):
        return request.param
    result = shared_lab_run(request.param.removeprefix("run:"))     # the boot tests/lab asserts on
    assert result.ok, result.summary()
    return str(result.directory)


def complete_dumps(d: str) -> list[str]:
    out = []
    for f in sorted(glob.glob(os.path.join(d, "dump", "*.kdump"))):
        with open_dump(f) as k:
            if not k.incomplete:
                out.append(f)
    return out


def x86_64_dump_or_skip(d: str, which: str) -> str:
    """dump/<which>-d31.kdump of ``d`` when it is complete and of an x86_64 kernel, else a skip."""
    path = os.path.join(d, "dump", f"{which}-d31.kdump")
    if path not in complete_dumps(d):
        pytest.skip(f"no complete {which} dump")
    with open_dump(path) as k:
        if k.machine != EM_X86_64:
            pytest.skip("Debian's makedumpfile reads only x86_64 dumps on this host")
    return path


def test_dmesg_of_lab_dumps(d):
    ref = open(os.path.join(d, "capture", "vmcore-dmesg.txt"), "rb").read()
    dumps = complete_dumps(d)
    assert dumps
    for f in dumps:
        with open_dump(f) as k:
            assert dmesg_bytes(KernelMemory(k)) == ref, f


def test_makedumpfile_reads_our_resave(d, tmp_path):
    src = x86_64_dump_or_skip(d, "makedumpfile")
    makedumpfile = oracle("makedumpfile", "makedumpfile")
    with open_dump(src) as k:
        DumpWriter(k, 31, "zlib").write(str(tmp_path / "ours.kdump"))
    ref = subprocess.run([makedumpfile, "--dump-dmesg", src, str(tmp_path / "ref.txt")], capture_output=True)
    assert ref.returncode == 0
    ours = subprocess.run([makedumpfile, "--dump-dmesg", str(tmp_path / "ours.kdump"), str(tmp_path / "o.txt")],
                          capture_output=True)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert (tmp_path / "o.txt").read_bytes() == (tmp_path / "ref.txt").read_bytes()


def test_classification_agrees_with_makedumpfile(d):
    ours_p, theirs_p = (os.path.join(d, "dump", f"{w}-d31.kdump") for w in ("kexecfw", "makedumpfile"))
    done = complete_dumps(d)
    if ours_p not in done or theirs_p not in done:
        pytest.skip("needs complete kexecfw-d31 and makedumpfile-d31 dumps")
    with open_dump(ours_p) as ours, open_dump(theirs_p) as theirs:
        assert ours._bitmap1 == theirs._bitmap1
        a = int.from_bytes(ours._bitmap2, "little")
        b = int.from_bytes(theirs._bitmap2, "little")
        ram = int.from_bytes(ours._bitmap1, "little").bit_count()
        only_ours, only_theirs = (a & ~b).bit_count(), (b & ~a).bit_count()
        assert only_ours <= ram // 50, (only_ours, only_theirs, ram)
        # we may drop what makedumpfile keeps only if it is a zero page (its -d 1 misses some)
        zero = bytes(theirs.page_size)
        rest = b & ~a
        while rest:
            pfn = (rest & -rest).bit_length() - 1
            rest &= rest - 1
            assert theirs.read_page(pfn) == zero, f"pfn {pfn:#x} dropped by kexecfw is not a zero page"


def test_makedumpfile_reads_the_capture_kernels_save(d, tmp_path):
    ours = x86_64_dump_or_skip(d, "kexecfw")
    r = subprocess.run([oracle("makedumpfile", "makedumpfile"), "--dump-dmesg", ours, str(tmp_path / "o.txt")],
                       capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr
    mine = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", "--makedumpfile", ours],
                          capture_output=True, check=True).stdout
    assert (tmp_path / "o.txt").read_bytes() == mine


def test_notes_name_the_panic_path(d):
    """The panicking CPU stopped in the kernel's crash path; kallsyms from the dump itself names it."""
    from kexecfw.vmcore.prstatus import describe_cpus
    ref = open(os.path.join(d, "capture", "vmcore-dmesg.txt"), "rb").read()
    for f in complete_dumps(d):
        with open_dump(f) as k:
            states, known, panic, ksyms, exact = describe_cpus(k, None, ref)
            assert panic is not None and b"sysrq" in ref
            (p,) = [s for s in states if s.panic]
            assert p.cpu == panic[0] and p.pid == panic[1]
            if ksyms is None:
                continue
            assert ksyms.address("_stext") == k.vmcoreinfo.symbol("_stext")
            assert ksyms.lookup(p.pc).split("+")[0] in ("__crash_kexec", "crash_kexec", "panic",
                                                        "machine_crash_shutdown", "crash_setup_regs")
            if k.machine == EM_X86_64:
                assert exact and known          # Debian's x86_64 kernel has KALLSYMS_ALL: crash_notes is named


def test_split_set_from_makedumpfile(d, tmp_path):
    src = x86_64_dump_or_skip(d, "makedumpfile")
    parts = [str(tmp_path / f"part{i}") for i in range(3)]
    subprocess.run([oracle("makedumpfile", "makedumpfile"), "--split", "--splitblock-size", "64", "-d", "31", "-c",
                    src, *parts], check=True, capture_output=True)
    ref = open(os.path.join(d, "capture", "vmcore-dmesg.txt"), "rb").read()
    with open_dump(list(reversed(parts))) as s, open_dump(src) as whole:
        assert s.format == "kdump-split" and len({k.start_pfn for k in s.parts}) == 3
        assert s.dumped_pages == whole.dumped_pages
        assert dmesg_bytes(KernelMemory(s)) == ref
        for r in whole.ranges()[::7]:
            assert s.read_phys(r.start, r.end - r.start) == whole.read_phys(r.start, r.end - r.start)
    r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", parts[0], parts[2]],
                       capture_output=True, text=True)
    assert r.returncode == 3 and "give every file of the set" in r.stderr


def test_elf_resave_reads_in_vmcore_dmesg(d, tmp_path):
    """Our ELF output carries /proc/vmcore's virtual addresses (direct map, kernel image):
    kexec-tools' vmcore-dmesg, which translates by them, reads it (any architecture)."""
    ref = open(os.path.join(d, "capture", "vmcore-dmesg.txt"), "rb").read()
    src = complete_dumps(d)[0]
    out = tmp_path / "v.elf"
    with open_dump(src) as k:
        DumpWriter(k, 31, elf=True).write(str(out))
    r = subprocess.run([oracle("vmcore-dmesg", "kexec-tools"), str(out)], capture_output=True)
    assert r.returncode == 0 and r.stdout == ref
