"""Numbers from VMCOREINFO and from the crashed kernel's memory are bounded before any reader uses them.

Each case is a real mini vmcore (arm64 and x86_64 Debian 6.1 crashes) with one value rewritten: a
VMCOREINFO line (tests/vmcore/mutate.py rewrites the note's text) or a field of the printk ring or of
the kallsyms tables in the dump's memory. The outcome is a BadInputError naming the key or the kernel
structure, quickly; values that would have run for minutes (a ring of 2^64-1 bytes) included. The
hypothesis test at the end mutates every numeric key of the real notes.
"""
from __future__ import annotations

import signal
import struct
import time
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kexecfw.elfnotes import Note
from kexecfw.errors import BadInputError, KexecfwError
from kexecfw.vmcore import kallsyms, open_dump
from kexecfw.vmcore.classify import Classifier
from kexecfw.vmcore.dmesg import dmesg_bytes, log_buffer_extents
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcore.prstatus import cpus_from_memory, describe_cpus
from kexecfw.vmcore.writer import DumpWriter
from kexecfw.vmcoreinfo import VmcoreInfo
from tests.vmcore.mutate import poke_phys, vmcoreinfo_text, with_vmcoreinfo
from tests.vmcore.test_fuzz import FUZZ, exercise
from tests.vmcore.test_old_log_buffers import FlatDump

U64_MAX = (1 << 64) - 1
QUICK = 5.0       # seconds: each case takes milliseconds; minutes before the bounds


@contextmanager
def quickly(limit: float = QUICK):
    """Fail, rather than hang, when the body runs longer than ``limit`` seconds."""
    def expire(*_):
        raise TimeoutError(f"still running after {limit} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - start < limit


class Seeds(dict):
    """The mini vmcores' bytes by architecture (a short repr: hypothesis prints its arguments)."""

    def __repr__(self) -> str:
        return f"Seeds({', '.join(self)})"


@pytest.fixture(scope="module")
def seeds(mini_vmcores) -> Seeds:
    return Seeds((arch, path.read_bytes()) for arch, path in mini_vmcores.items())


def changed(tmp_path, data: bytes, changes: dict[str, str | None]) -> str:
    path = tmp_path / "vmcore.elf"
    path.write_bytes(with_vmcoreinfo(data, changes))
    return str(path)


def bad_input(path: str, step) -> str:
    """The message of the BadInputError that ``step(dump)`` raises on the dump at ``path``, quickly."""
    with quickly(), pytest.raises(BadInputError) as e, open_dump(path) as dump:
        step(dump)
    assert "\n" not in e.value.message
    return e.value.message


def dmesg(dump) -> bytes:
    return dmesg_bytes(KernelMemory(dump))


def classifier(dump) -> Classifier:
    return Classifier(KernelMemory(dump), 31)


def extents(dump) -> list[tuple[int, int]]:
    return log_buffer_extents(KernelMemory(dump))


# --- VMCOREINFO values --------------------------------------------------------------------------

@pytest.mark.parametrize("arch,key,value,step,words", [
    # a page size (the readers check it too; KernelMemory takes it only checked)
    ("x86_64", "PAGESIZE", "999999999", KernelMemory, "page size 999999999"),
    ("arm64", "PAGESIZE", "8192", KernelMemory, "page size 8192"),
    # struct sizes: a ring of 2^64-1 byte entries ran for minutes (arm64's linear map translates anything)
    ("arm64", "SIZE(printk_ringbuffer)", str(U64_MAX), dmesg,
     f"VMCOREINFO SIZE(printk_ringbuffer)={U64_MAX} is not plausible"),
    ("arm64", "SIZE(prb_desc)", str(U64_MAX), dmesg, f"VMCOREINFO SIZE(prb_desc)={U64_MAX} is not plausible"),
    ("arm64", "SIZE(printk_info)", str(1 << 63), extents, "VMCOREINFO SIZE(printk_info)"),
    ("x86_64", "SIZE(page)", str(1 << 63), classifier, f"VMCOREINFO SIZE(page)={1 << 63} is not plausible"),
    ("x86_64", "SIZE(mem_section)", "0", classifier, "VMCOREINFO SIZE(mem_section)=0 is not plausible"),
    # offsets: struct.error before
    ("x86_64", "OFFSET(prb_desc_ring.count_bits)", "-1", dmesg,
     "VMCOREINFO OFFSET(prb_desc_ring.count_bits)=-1 lies outside struct prb_desc_ring"),
    ("arm64", "OFFSET(printk_ringbuffer.desc_ring)", "88", dmesg,
     "VMCOREINFO OFFSET(printk_ringbuffer.desc_ring)=88 lies outside struct printk_ringbuffer (88 bytes)"),
    ("x86_64", "OFFSET(page.flags)", "60", classifier, "VMCOREINFO OFFSET(page.flags)=60 lies outside struct page"),
    ("arm64", "OFFSET(uts_namespace.name)", "-8", lambda d: KernelMemory(d).utsname(),
     "VMCOREINFO OFFSET(uts_namespace.name)=-8 lies outside"),
    # shifts: negative shift counts, MemoryError, ZeroDivisionError before
    ("x86_64", "NUMBER(SECTION_SIZE_BITS)", "-1", classifier,
     "VMCOREINFO NUMBER(SECTION_SIZE_BITS)=-1 is not plausible"),
    ("arm64", "NUMBER(MAX_PHYSMEM_BITS)", str(U64_MAX), classifier, "VMCOREINFO NUMBER(MAX_PHYSMEM_BITS)="),
    ("arm64", "NUMBER(VA_BITS)", "-1", KernelMemory,
     "VMCOREINFO NUMBER(VA_BITS)=-1 is not plausible (expected 36..52)"),
    ("arm64", "NUMBER(VA_BITS)", str(1 << 63), KernelMemory, "VMCOREINFO NUMBER(VA_BITS)="),
    ("arm64", "NUMBER(TCR_EL1_T1SZ)", "0x40", KernelMemory, "VMCOREINFO NUMBER(TCR_EL1_T1SZ)=64 is not plausible"),
    ("x86_64", "NUMBER(PG_lru)", "-4", classifier, "VMCOREINFO NUMBER(PG_lru)=-4 is not plausible"),
    # the page-table walk's AssertionError: a top-level table outside the kernel image
    ("x86_64", "SYMBOL(init_top_pgt)", "1", KernelMemory,
     "VMCOREINFO SYMBOL(init_top_pgt)=0x1 is not in the kernel image"),
    ("x86_64", "NUMBER(KERNEL_IMAGE_SIZE)", "1", KernelMemory, "SYMBOL(init_top_pgt)"),
    ("x86_64", "NUMBER(KERNEL_IMAGE_SIZE)", "-1", KernelMemory, "VMCOREINFO NUMBER(KERNEL_IMAGE_SIZE)=-1"),
    ("x86_64", "NUMBER(phys_base)", str(1 << 60), KernelMemory, "VMCOREINFO NUMBER(phys_base)="),
    ("x86_64", "NUMBER(phys_base)", str(-(1 << 60)), KernelMemory, "VMCOREINFO NUMBER(phys_base)="),
    # not a number at all, where a reader needs one
    ("arm64", "SYMBOL(prb)", "zz", dmesg, "VMCOREINFO SYMBOL(prb)='zz' is not a number"),
])
def test_vmcoreinfo_value_out_of_bounds(seeds, tmp_path, arch, key, value, step, words):
    message = bad_input(changed(tmp_path, seeds[arch], {key: value}), step)
    assert words in message, message


def test_a_corrupt_ring_size_does_not_stall_save_notes_or_info(seeds, tmp_path):
    """``save`` keeps going without the log's pages protected (and says why); notes and info as before."""
    path = changed(tmp_path, seeds["arm64"], {"SIZE(prb_desc)": str(U64_MAX)})
    with quickly(), open_dump(path) as dump:
        writer = DumpWriter(dump, 31, "zlib")
        writer.write(str(tmp_path / "out.kdump"))
        assert "SIZE(prb_desc)" in writer.stats["protect_warning"]
        states, *_ = describe_cpus(dump)
        assert len(states) == 4
        assert KernelMemory(dump).utsname()["machine"] == "aarch64"


def test_missing_key_names_it_and_what_needs_it(seeds, tmp_path):
    message = bad_input(changed(tmp_path, seeds["x86_64"], {"SIZE(prb_desc)": None}), dmesg)
    assert message == "VMCOREINFO lacks SIZE(prb_desc): cannot read the kernel log"
    message = bad_input(changed(tmp_path, seeds["x86_64"], {"SIZE(page)": None}), classifier)
    assert message == "VMCOREINFO lacks SIZE(page): cannot filter pages at dump level 31; use -d 0 or -d 1"


def test_the_real_notes_are_within_bounds(mini_vmcores, expected_dmesg):
    for arch, path in mini_vmcores.items():
        with open_dump(str(path)) as dump:
            mem = KernelMemory(dump)
            assert dmesg_bytes(mem) == expected_dmesg[arch]
            assert Classifier(mem, 31).pages_per_section == 1 << (27 - 12)


# --- values read from the crashed kernel's memory -----------------------------------------------

def ring_field(seed_path: str, offset: int) -> int:
    """Physical address of the field at ``offset`` in the crashed kernel's struct printk_ringbuffer."""
    with open_dump(seed_path) as dump:
        mem = KernelMemory(dump)
        return mem.vtop(mem.read_u64(mem.info.symbol("prb")) + offset)


@pytest.mark.parametrize("arch,offset,value,words", [
    # struct prb_desc_ring at 0: count_bits (u32) at 0; struct prb_data_ring at 48: size_bits (u32) at 0
    ("arm64", 48, (0xFFFFFFFF).to_bytes(4, "little"),
     "printk ring buffer text_data_ring.size_bits is 4294967295, not plausible (max 31)"),
    ("x86_64", 48, (32).to_bytes(4, "little"), "text_data_ring.size_bits is 32, not plausible (max 31)"),
    ("arm64", 0, (27).to_bytes(4, "little"), "desc_ring.count_bits is 27, not plausible (max 26)"),
    # a descriptor count the dump's memory cannot hold (x86_64: 2 GiB of memory, 2^26 x 88-byte infos)
    ("x86_64", 0, (26).to_bytes(4, "little"), "the printk info ring (67108864 infos) is 5905580032 bytes"),
])
def test_ring_numbers_in_memory_are_bounded(mini_vmcores, seeds, tmp_path, arch, offset, value, words):
    path = tmp_path / "ring.elf"
    path.write_bytes(poke_phys(seeds[arch], ring_field(str(mini_vmcores[arch]), offset), value))
    for step in (dmesg, extents):
        message = bad_input(str(path), step)
        assert words in message, message


def test_a_ring_larger_than_the_memory_the_dump_holds_fails_quickly(mini_vmcores, seeds, tmp_path):
    """2^31 bytes of text ring (the kernel's maximum) where the arm64 dump holds 0.6 MiB: the read fails at
    the first 16 MiB run, not after translating half a million linear-map pages (6 s)."""
    path = tmp_path / "ring.elf"
    path.write_bytes(poke_phys(seeds["arm64"], ring_field(str(mini_vmcores["arm64"]), 48), (31).to_bytes(4, "little")))
    message = bad_input(str(path), dmesg)
    assert "is not in the dump" in message, message


def structured_log(buf_len: int, layout: str) -> FlatDump:
    """A 3.5-5.9 kernel's log (struct printk_log records in log_buf) holding no record, described by
    ``layout`` (VMCOREINFO lines of struct printk_log)."""
    mem = bytearray(3 * 4096)
    syms = {"log_buf": 0x1000, "log_buf_len": 0x1008, "log_first_idx": 0x1010, "log_next_idx": 0x1018}
    struct.pack_into("<Q", mem, syms["log_buf"], KBASE + 0x2000)
    struct.pack_into("<I", mem, syms["log_buf_len"], buf_len)
    info = "".join(f"SYMBOL({k})={KBASE + v:x}\n" for k, v in syms.items()) + "NUMBER(phys_base)=0\n" + layout
    return FlatDump(mem, info)


PRINTK_LOG = ("SIZE(printk_log)=16\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n"
              "OFFSET(printk_log.text_len)=10\n")


def test_structured_log_as_built_is_read():
    assert dmesg_bytes(KernelMemory(structured_log(0x1000, PRINTK_LOG))) == b""      # an empty log


@pytest.mark.parametrize("buf_len,layout,words", [
    (0xFFFFFFFF, PRINTK_LOG, "log_buf_len is 4294967295, not plausible (max 2147483648)"),
    (0x100, PRINTK_LOG.replace("SIZE(printk_log)=16", "SIZE(printk_log)=0"), "VMCOREINFO SIZE(printk_log)=0 is not"),
    (0x100, PRINTK_LOG.replace("len)=8", "len)=15"), "VMCOREINFO OFFSET(printk_log.len)=15 lies outside struct "
     "printk_log (16 bytes)"),
])
def test_structured_log_numbers_are_bounded(buf_len, layout, words):
    with quickly(), pytest.raises(BadInputError) as e:
        dmesg_bytes(KernelMemory(structured_log(buf_len, layout)))
    assert words in e.value.message, e.value.message


def test_structured_log_length_is_bounded_by_the_dump():
    with pytest.raises(BadInputError) as e:
        log_buffer_extents(KernelMemory(structured_log(1 << 20, PRINTK_LOG)))
    assert e.value.message == ("the log buffer (log_buf_len) is 1048576 bytes, more than the 12288 bytes of "
                               "memory the dump describes: the dump is corrupt")


# --- kallsyms tables: the crashed kernel's data too -------------------------------------------------
# A small x86_64 kernel memory (tests/vmcore/test_old_log_buffers.FlatDump: the kernel image map with
# phys_base 0) holding kallsyms tables in the kernel's layout (scripts/kallsyms.c): token i is the
# character i, so a name is its own bytes as token indices.

KBASE = 0xFFFFFFFF80000000
KALLSYMS_AT = {"kallsyms_num_syms": 0x3000, "kallsyms_relative_base": 0x3008, "kallsyms_offsets": 0x3010,
               "kallsyms_names": 0x3100, "kallsyms_token_index": 0x3400, "kallsyms_token_table": 0x3600}
SYMBOLS = [("T", "_stext", 0x1000), ("T", "panic", 0x2000), ("D", "crash_notes", 0x9000),
           ("D", "__per_cpu_offset", 0x9100)]


def kallsyms_memory() -> tuple[bytearray, str]:
    mem = bytearray(16 * 4096)
    at = KALLSYMS_AT
    struct.pack_into("<I", mem, at["kallsyms_num_syms"], len(SYMBOLS))
    struct.pack_into("<Q", mem, at["kallsyms_relative_base"], KBASE)
    names = b""
    for i, (kind, name, offset) in enumerate(SYMBOLS):
        # x86_64's absolute per-CPU encoding: a negative offset o means base - 1 - o
        struct.pack_into("<i", mem, at["kallsyms_offsets"] + 4 * i, KBASE - 1 - (KBASE + offset))
        names += bytes([1 + len(name)]) + kind.encode() + name.encode()
    mem[at["kallsyms_names"]:at["kallsyms_names"] + len(names)] = names
    struct.pack_into("<256H", mem, at["kallsyms_token_index"], *range(0, 512, 2))
    mem[at["kallsyms_token_table"]:at["kallsyms_token_table"] + 512] = b"".join(bytes([i, 0]) for i in range(256))
    info = "".join(f"SYMBOL({k})={KBASE + v:x}\n" for k, v in at.items()) + "NUMBER(phys_base)=0\n"
    return mem, info


def test_synthetic_kallsyms_tables_load():
    mem, info = kallsyms_memory()
    ks = kallsyms.load(KernelMemory(FlatDump(mem, info)))
    assert ks.address("_stext") == KBASE + 0x1000 and ks.lookup(KBASE + 0x2010) == "panic+0x10"


@pytest.mark.parametrize("table,offset,value", [
    ("kallsyms_num_syms", 0, struct.pack("<I", 0xFFFFFFFF)),      # not plausible
    ("kallsyms_num_syms", 0, struct.pack("<I", 1000)),            # plausible, more than the names hold
    ("kallsyms_names", 0, b"\xff\xff"),                           # a two-byte length past the names
    ("kallsyms_token_index", 0, b"\xff\xff"),                     # a token table past the dump's memory
])
def test_corrupt_kallsyms_tables_mean_no_symbols(table, offset, value):
    mem, info = kallsyms_memory()
    at = KALLSYMS_AT[table] + offset
    mem[at:at + len(value)] = value
    with quickly():
        assert kallsyms.load(KernelMemory(FlatDump(mem, info))) is None


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 0x7FF), st.integers(0, 255)), min_size=1, max_size=16))
def test_any_damage_to_kallsyms_tables(edits):
    mem, info = kallsyms_memory()
    for off, byte in edits:
        mem[0x3000 + off] = byte
    with quickly():
        ks = kallsyms.load(KernelMemory(FlatDump(mem, info)))
    assert ks is None or len(ks.addrs) == struct.unpack_from("<I", mem, 0x3000)[0]


def test_crash_notes_pointer_out_of_memory_means_cpus_unknown():
    mem, info = kallsyms_memory()
    struct.pack_into("<Q", mem, 0x9000, U64_MAX)           # crash_notes: a per-CPU pointer nowhere
    kmem = KernelMemory(FlatDump(mem, info))
    notes = [Note(b"CORE", 1, bytes(336), 0)]
    with quickly():
        assert cpus_from_memory(kmem, kallsyms.load(kmem), notes) is None


# --- every numeric key of the real notes, mutated -------------------------------------------------

def _numeric_keys(data: bytes) -> list[tuple[str, str, int]]:
    """(key, text, value) of each numeric line of ``data``'s VMCOREINFO."""
    out = []
    for line in vmcoreinfo_text(data).splitlines():
        key, _, text = line.partition("=")
        value = VmcoreInfo.parse(line).get_int(key)
        if value is not None:
            out.append((key, text, value))
    return out


def _as_text(key: str, old_text: str, value: int) -> str:
    """``value`` written the way the kernel writes ``key``: hex without 0x for symbols and KERNELOFFSET,
    with 0x where the kernel used it, decimal otherwise."""
    sign, magnitude = ("-" if value < 0 else ""), abs(value)
    if key.startswith("SYMBOL(") or key == "KERNELOFFSET":
        return f"{sign}{magnitude:x}"
    if old_text.startswith("0x"):
        return f"{sign}0x{magnitude:x}"
    return f"{sign}{magnitude}"


def everything(path: str) -> None:
    """What the readers do with a dump: open, notes, utsname, dmesg (test_fuzz.exercise), then the log's
    extents, the CPUs' notes with kallsyms, and the page classifier's setup; only KexecfwError may escape."""
    exercise(path)
    try:
        with open_dump(path) as dump:
            mem = KernelMemory(dump)
            describe_cpus(dump)
            log_buffer_extents(mem)
            Classifier(mem, 31)
    except KexecfwError as e:
        assert e.message and "\n" not in e.message


EDGES = [0, -1, 1, 1 << 31, 1 << 63, U64_MAX, 1 << 64, 10 ** 12, 4096, 65536]


@FUZZ
@given(arch=st.sampled_from(["arm64", "x86_64"]), pick=st.integers(0, 1 << 16),
       value=st.one_of(st.sampled_from(EDGES), st.integers(-(1 << 65), 1 << 65)),
       nudge=st.sampled_from([None, -1, 1, "double", "half"]))
def test_any_numeric_vmcoreinfo_value(seeds, tmp_path_factory, arch, pick, value, nudge):
    keys = _numeric_keys(seeds[arch])
    key, text, old = keys[pick % len(keys)]
    if nudge is not None:        # off by one, or a neighbour of the real value
        value = {"double": old * 2, "half": old >> 1}.get(nudge, old + nudge if isinstance(nudge, int) else value)
    path = tmp_path_factory.mktemp("v") / "vmcore.elf"
    path.write_bytes(with_vmcoreinfo(seeds[arch], {key: _as_text(key, text, value)}))
    with quickly(20.0):
        everything(str(path))


@pytest.mark.parametrize("phys_base", [-0x26800000, -0x8000000, 0, 0x3a000000])
def test_x86_64_phys_base_may_be_negative(seeds, tmp_path, phys_base):
    """The kernel prints phys_base with %ld: below zero when KASLR put the kernel under the physical
    address it was linked for (seen in the lab's service runs). The kernel image then translates by it."""
    from kexecfw.vmcore.kmem import KernelMemory
    with open_dump(changed(tmp_path, seeds["x86_64"], {"NUMBER(phys_base)": str(phys_base)})) as dump:
        mem = KernelMemory(dump)
        start_kernel_map = mem.arch.START_KERNEL_MAP
        assert mem.arch.phys_base == phys_base
        assert mem.arch.linear(start_kernel_map + 0x3000000) == 0x3000000 + phys_base
