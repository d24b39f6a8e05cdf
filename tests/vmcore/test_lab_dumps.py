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
  the two read at slightly different points of the capture) - unless the makedumpfile that
  wrote the dump is known to misread it (MAKEDUMPFILE_DEFECTS: Debian 13's 1.7.6 on 6.12
  page types, and every release on riscv64);
* our classification against the crashed kernel's own accounting, read from the dump: the
  free pages are exactly those of the zones' buddy free lists, and the cache and user pages
  as many as the zones' LRU counters (required where makedumpfile cannot be the reference).
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.classify import Classifier
from kexecfw.vmcore.dmesg import dmesg_bytes
from kexecfw.vmcore.dumpfile import MemoryMissing
from kexecfw.vmcore.kdumpfmt import DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRI, DL_EXCLUDE_FREE, DL_EXCLUDE_USER_DATA
from kexecfw.vmcore.bounds import EM_RISCV, EM_X86_64
from kexecfw.vmcore.kmem import KernelMemory, TranslationError
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


# The makedumpfile of the lab's guests, by Debian release (the packages 1:1.7.2-1 and 1:1.7.6-1; trixie's
# is upstream 1.7.6 with no patch, its changelog.Debian), for results that did not record `makedumpfile -v`.
LAB_MAKEDUMPFILE = {"bookworm": (1, 7, 2), "trixie": (1, 7, 6)}


def _modern_page_types(k) -> bool:
    """6.12+: PAGE_BUDDY_MAPCOUNT_VALUE is PGTY_buddy << 24 (low 24 bits clear), no longer ~PG_buddy."""
    value = k.vmcoreinfo.number("PAGE_BUDDY_MAPCOUNT_VALUE")
    return value is not None and value & 0xFFFFFF == 0


# Known makedumpfile defects that make its -d 31 wrong on a dump: (what, first release with the fix or
# None when no release has it, does the dump show the condition). Read in makedumpfile's history.
MAKEDUMPFILE_DEFECTS = [
    ("takes 6.12's page types (one value in page_type's top byte) for the pre-6.12 cleared bits: its isSlab "
     "accepts buddy, offline and hugetlb pages, so no free page is excluded (fixed by 72c3414, 'fix detection "
     "of typed (compound) pages (Linux 6.12)')", (1, 7, 7), _modern_page_types),
    ("vtop_riscv64 translates a leaf above the PTE level (the vmemmap's 2 MiB blocks) to the block's first "
     "page, so every struct page it reads is one of its section's first 64 (fixed by 863e2c4, after 1.7.9)",
     None, lambda k: k.machine == EM_RISCV),
]


def makedumpfile_version(d: str) -> tuple[int, ...] | None:
    """The version of the makedumpfile that wrote ``d``'s dump: `makedumpfile -v` if the lab recorded it,
    else the package of the guest's Debian release (result.json's kernel generation); None if unknown."""
    import json
    import re
    recorded = os.path.join(d, "capture", "steps", "makedumpfile-version.out")
    if os.path.isfile(recorded):
        m = re.search(r"version (\d+)\.(\d+)\.(\d+)", open(recorded).read())
        if m:
            return tuple(int(x) for x in m.groups())
    try:
        generation = json.load(open(os.path.join(d, "result.json")))["generation"]
    except (OSError, ValueError, KeyError):
        return None
    from kexecfw.lab.targets import GENERATIONS
    gen = GENERATIONS.get(generation)
    return LAB_MAKEDUMPFILE.get(gen.suites[0]) if gen else None


def makedumpfile_defects(d: str, k) -> list[str]:
    """The defects of MAKEDUMPFILE_DEFECTS that the makedumpfile of ``d`` has and dump ``k`` meets (an
    unknown version is taken to have them all)."""
    version = makedumpfile_version(d)
    return [what for what, fixed, applies in MAKEDUMPFILE_DEFECTS
            if applies(k) and (fixed is None or version is None or version < fixed)]


def test_classification_agrees_with_makedumpfile(d):
    ours_p, theirs_p = (os.path.join(d, "dump", f"{w}-d31.kdump") for w in ("kexecfw", "makedumpfile"))
    done = complete_dumps(d)
    if ours_p not in done or theirs_p not in done:
        pytest.skip("needs complete kexecfw-d31 and makedumpfile-d31 dumps")
    with open_dump(ours_p) as ours, open_dump(theirs_p) as theirs:
        defects = makedumpfile_defects(d, theirs)
        if defects:
            # The dump must show it: makedumpfile kept pages of the kernel's free lists (both defects do that
            # on a dump with free memory). test_classification_matches_the_kernels_accounting checks ours.
            free = free_list_pages(KernelMemory(theirs))
            assert free and _bits(theirs._bitmap2) & free, "makedumpfile's dump shows none of its known defects"
            pytest.skip("makedumpfile %s misreads this dump: %s" % (
                ".".join(map(str, makedumpfile_version(d) or ("?",))), "; ".join(defects)))
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


def _bits(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little")


def _present_runs(k) -> list[tuple[int, int]]:
    return [(r.start // k.page_size, r.end // k.page_size) for r in k._all_ranges(k._bitmap1)]


def _pgdats(mem: KernelMemory) -> list[int]:
    """The pglist_data of each online node: VMCOREINFO's node_data, else kallsyms' node_data or
    contig_page_data (Debian's riscv64 6.12 exports only node_online_map)."""
    from kexecfw.vmcore.kallsyms import load
    info = mem.info
    node_data = info.symbol("node_data")
    ksyms = None
    if node_data is None:
        ksyms = load(mem)
        node_data = ksyms.address("node_data") if ksyms else None
    if node_data is None:
        single = ksyms.address("contig_page_data") if ksyms else None
        return [single] if single else []
    online = mem.read_u64(info.symbol("node_online_map")) if info.symbol("node_online_map") else 1
    return [mem.read_u64(node_data + 8 * n) for n in range(64) if online >> n & 1]


def _zones(mem: KernelMemory):
    o, size = mem.info.offset, mem.info.size
    for pgdat in _pgdats(mem):
        for z in range(mem.read_u32(pgdat + o("pglist_data.nr_zones"))):
            yield pgdat + o("pglist_data.node_zones") + z * size("zone")


def free_list_pages(mem: KernelMemory) -> int:
    """The pfns of every block on the zones' buddy free lists (free_area[order].free_list[type]), a bitmask."""
    info, o, size = mem.info, mem.info.offset, mem.info.size
    page = size("page")
    # SPARSEMEM_VMEMMAP: every section's decoded section_mem_map is the same base, vmemmap (pfn 0's page)
    c = Classifier(mem, DL_EXCLUDE_FREE)
    pfns = _present_runs(mem.dump)
    first, last = (c._section_mem_map(pfn // c.pages_per_section) for pfn in (pfns[0][0], pfns[-1][1] - 1))
    assert first == last != 0, "not a SPARSEMEM_VMEMMAP mem_map"
    vmemmap = first
    out, budget = 0, mem.dump.max_pfn()
    for zone in _zones(mem):
        for order in range(info.length("zone.free_area")):
            area = zone + o("zone.free_area") + order * size("free_area")
            for migratetype in range(info.length("free_area.free_list")):
                head = area + o("free_area.free_list") + migratetype * size("list_head")
                entry = mem.read_u64(head + o("list_head.next"))
                while entry != head:
                    pfn = (entry - o("page.lru") - vmemmap) // page
                    out |= ((1 << (1 << order)) - 1) << pfn
                    entry = mem.read_u64(entry + o("list_head.next"))
                    budget -= 1
                    assert budget > 0, "a free list longer than there are pages"
    return out


def _zone_stat(mem: KernelMemory, items: range) -> int:
    """The sum over the zones of vm_stat[items] (enum zone_stat_item: 0 NR_FREE_PAGES, then the five LRU
    lists from NR_ZONE_LRU_BASE = 1, the same from 4.8 to 6.12)."""
    at = mem.info.offset("zone.vm_stat")
    # atomic_long_t: a zone's counter can be a little below zero (CPU deltas not yet folded in)
    return sum(int.from_bytes(mem.read(zone + at + 8 * i, 8), "little", signed=True)
               for zone in _zones(mem) for i in items)


def test_classification_matches_the_kernels_accounting(d):
    """Our classes against the crashed kernel's own books, read from our -d 31 dump. Required where
    makedumpfile's dump cannot be the reference; elsewhere it runs where node_data can be found."""
    path = os.path.join(d, "dump", "kexecfw-d31.kdump")
    if path not in complete_dumps(d):
        pytest.skip("no complete kexecfw-d31 dump")
    with open_dump(path) as k:
        mem = KernelMemory(k)
        theirs = os.path.join(d, "dump", "makedumpfile-d31.kdump")
        required = os.path.isfile(theirs) and bool(makedumpfile_defects(d, k))
        try:
            free = free_list_pages(mem)
            runs = _present_runs(k)
            ours_free, classes = Classifier(mem, DL_EXCLUDE_FREE), Classifier(
                mem, DL_EXCLUDE_CACHE | DL_EXCLUDE_CACHE_PRI | DL_EXCLUDE_USER_DATA)
            found = 0
            for start, n in ours_free.excluded(runs):
                found |= ((1 << n) - 1) << start
            for _ in classes.excluded(runs):
                pass
            nr_free, lru = _zone_stat(mem, range(0, 1)), _zone_stat(mem, range(1, 6))
        except (MemoryMissing, TranslationError) as e:
            if required:
                raise
            pytest.skip(f"the kernel's zones cannot be read from this dump: {e}")
        if not free and not required:
            pytest.skip("no node_data or contig_page_data in VMCOREINFO or kallsyms")
        # the free pages: exactly the free lists, and as many as NR_FREE_PAGES (per-CPU counter drift aside)
        assert found == free, ((found & ~free).bit_count(), (free & ~found).bit_count())
        assert abs(free.bit_count() - nr_free) <= max(64, nr_free // 200), (free.bit_count(), nr_free)
        assert not _bits(k._bitmap2) & free
        # cache and user pages: those on the LRU lists (no swap cache off the LRU in the lab's guests)
        ours = sum(classes.stats[c] for c in ("cache", "cache_private", "user"))
        assert abs(ours - lru) <= max(256, lru // 100), (classes.stats, lru)


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
                                                        "machine_crash_shutdown", "crash_setup_regs",
                                                        # riscv64: arch/riscv/kernel/crash_save_regs.S
                                                        "riscv_crash_save_regs")
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
