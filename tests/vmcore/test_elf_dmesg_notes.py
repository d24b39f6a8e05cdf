"""ELF vmcores from real Debian 6.1 crashes: dmesg, notes, VMCOREINFO, address translation."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ARCHES
from kexecfw.vmcore import open_dump
from kexecfw.vmcore.dmesg import dmesg_bytes, format_record, records
from kexecfw.vmcore.kmem import KernelMemory
from kexecfw.vmcore.prstatus import assign_cpus, panic_from_log, parse_prstatus
from tests.conftest import oracle

REGS = {"arm64": 34, "x86_64": 27}


@pytest.mark.parametrize("arch", ARCHES)
def test_dmesg_is_byte_identical_to_vmcore_dmesg(arch, mini_vmcores, expected_dmesg):
    with open_dump(str(mini_vmcores[arch])) as dump:
        out = dmesg_bytes(KernelMemory(dump))
    assert out == expected_dmesg[arch]
    assert b"sysrq: Trigger a crash" in out and b"Kernel panic - not syncing" in out


@pytest.mark.parametrize("arch", ARCHES)
def test_dmesg_through_vmcoreinfo_translation_only(arch, mini_vmcores, expected_dmesg):
    """Ignore the ELF's virtual addresses: KASLR offsets and linear rules from VMCOREINFO must suffice."""
    with open_dump(str(mini_vmcores[arch])) as dump:
        mem = KernelMemory(dump)
        mem._vsegs = []
        assert dmesg_bytes(mem) == expected_dmesg[arch]
        for vaddr, paddr, _ in dump.virtual_segments():
            if arch == "arm64" or vaddr >= 0xFFFFFFFF80000000:   # x86 direct map needs page tables
                mem._cache.clear()
                assert mem.vtop(vaddr) == paddr


@pytest.mark.parametrize("arch", ARCHES)
def test_dmesg_equals_vmcore_dmesg_binary(arch, mini_vmcores):
    ref = subprocess.run([oracle("vmcore-dmesg", "kexec-tools"), str(mini_vmcores[arch])], capture_output=True,
                         check=True).stdout
    ours = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", str(mini_vmcores[arch])],
                          capture_output=True, check=True).stdout
    assert ours == ref


@pytest.mark.parametrize("arch", ARCHES)
def test_kernel_style_prefixes_every_line_and_shows_caller(arch, mini_vmcores):
    with open_dump(str(mini_vmcores[arch])) as dump:
        recs = list(records(KernelMemory(dump)))
    assert len(recs) > 250
    assert [r.seq for r in recs] == sorted(r.seq for r in recs)
    panic = next(r for r in recs if r.text.startswith(b"Kernel panic"))
    assert panic.level == 0 and panic.caller_id == 1        # KERN_EMERG, task pid 1 (init)
    line = format_record(panic, kernel_style=True, show_level=True, show_caller=True)
    assert line.startswith(b"<0>[") and b"][    T1] Kernel panic" in line
    multi = [r for r in recs if b"\n" in r.text]
    for r in multi:
        out = format_record(r, kernel_style=True)
        assert out.count(b"\n[") == r.text.count(b"\n")


@pytest.mark.parametrize("arch", ARCHES)
def test_notes_per_cpu_and_panicking_cpu(arch, mini_vmcores, expected_dmesg):
    from kexecfw.pluginmanager import Hooks
    with open_dump(str(mini_vmcores[arch])) as dump:
        names = Hooks().prstatus_registers(dump.machine)
        assert len(names) == REGS[arch]
        states = [parse_prstatus(n, i, names) for i, n in enumerate(dump.prstatus_notes())]
        info = dump.vmcoreinfo
    assert len(states) == 4
    panic = panic_from_log(expected_dmesg[arch])
    assert panic == (2, 1, "init")
    assert assign_cpus(states, None, panic) is False
    assert [s.cpu for s in states] == [0, 1, 2, 3]
    assert [s.panic for s in states] == [False, False, True, False]
    assert [s.pid for s in states] == [0, 0, 1, 0]
    stext = info.symbol("_stext")
    for s in states:
        # every CPU stopped inside the kernel image (idle loop, NMI/IPI handler or the panic path)
        assert stext <= s.pc < stext + (64 << 20)
    if arch == "arm64":
        assert states[2].lr is not None and stext <= states[2].lr < stext + (64 << 20)
    # online CPUs known: the mapping is exact and follows the list
    assert assign_cpus(states, [0, 1, 2, 3], panic) is True


def test_vmcoreinfo_types(mini_vmcores):
    with open_dump(str(mini_vmcores["x86_64"])) as dump:
        info = dump.vmcoreinfo
        assert info.number("phys_base") == 0x49C00000            # decimal in the kernel's output
        assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
        assert info.kernel_offset == 0x2A800000
        assert info.number("pgtable_l5_enabled") == 1
        assert info.page_size == 4096 and info.crash_time == 1795685684
        typed = info.typed()
        assert typed["OSRELEASE"] == "6.1.0-56-cloud-amd64" and typed["SIZE(page)"] == 64
    with open_dump(str(mini_vmcores["arm64"])) as dump:
        info = dump.vmcoreinfo
        assert info.number("kimage_voffset") == 0xFFFFB9F55A400000
        assert info.number("PHYS_OFFSET") == 0x40000000
        assert info.number("TCR_EL1_T1SZ") == 16 and info.number("VA_BITS") == 48


@pytest.mark.parametrize("arch", ARCHES)
def test_cli_info_notes_json(arch, mini_vmcores):
    import json
    run = lambda *a: subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", *a, str(mini_vmcores[arch])],
                                    capture_output=True, check=True, text=True).stdout
    info = json.loads(run("info", "--json"))
    assert info["schema"] == 1 and info["arch"] == arch and info["log"] == "lockless"
    assert info["utsname"]["release"].startswith("6.1.0-56")
    notes = json.loads(run("notes", "--json"))
    assert notes["panic"] == {"cpu": 2, "pid": 1, "comm": "init"}
    assert [c["panic"] for c in notes["cpus"]] == [False, False, True, False]
    assert all(c["pc"].startswith("0x") for c in notes["cpus"])
    text = run("notes")
    assert "<- panic" in text and ("LR" in text) == (arch == "arm64")


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "not-a-dump"
    bad.write_bytes(b"hello world, no dump here")
    for action in ("info", "notes", "dmesg"):
        r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", action, str(bad)],
                           capture_output=True, text=True)
        assert r.returncode == 3
        assert r.stderr.count("\n") == 1 and "not a crash dump" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("arch", ARCHES)
def test_overlapping_loads_of_real_proc_vmcore_header(arch, fixtures, tmp_path):
    """/proc/vmcore's kernel-text PT_LOAD lies inside a System RAM PT_LOAD: every physical address
    must map to the file offset some segment containing it gives (checked on the real header)."""
    from kexecfw.elfnotes import PT_LOAD, parse_elf_header
    hdr = (fixtures / arch / "capture" / "vmcore-hdr+notes.bin").read_bytes()
    header = parse_elf_header(hdr, "hdr")
    loads = [p for p in header.phdrs if p.type == PT_LOAD]
    assert any(a is not b and a.paddr <= b.paddr < a.paddr + a.filesz for a in loads for b in loads)
    f = tmp_path / "sparse.elf"
    f.write_bytes(hdr)
    with open(f, "r+b") as fh:
        fh.truncate(max(p.offset + p.filesz for p in loads))
    with open_dump(str(f)) as dump:
        for p in loads:
            for paddr in (p.paddr, p.paddr + p.filesz // 2, p.paddr + p.filesz - 1):
                off = dump.file_offset(paddr)
                assert any(q.paddr <= paddr < q.paddr + q.filesz and off == q.offset + paddr - q.paddr
                           for q in loads)
        mem = KernelMemory(dump)
        uts = mem.info.symbol("init_uts_ns")
        text = next(p for p in loads if p.vaddr <= uts < p.vaddr + p.filesz)
        assert mem.vtop(uts) == text.paddr + uts - text.vaddr


def test_x86_64_five_level_walk(mini_vmcores, expected_dmesg, tmp_path):
    """The real init_top_pgt (5-level) plus the lower tables the mini vmcore lacks (tests/vmcore/synth.py):
    the walk must agree with the ELF's own virtual addresses for the direct map and the kernel image."""
    from synth import x86_64_with_page_tables
    out = tmp_path / "pt.elf"
    x86_64_with_page_tables(str(mini_vmcores["x86_64"]), str(out))
    with open_dump(str(out)) as dump:
        mem = KernelMemory(dump)
        mem._vsegs = []
        assert mem.arch.levels == 5
        for vaddr, paddr, size in dump.virtual_segments():
            assert mem.arch.walk(mem, vaddr) == paddr
            assert mem.arch.walk(mem, vaddr + size - 1) == paddr + size - 1
        # a walk that ends at a 2 MiB leaf caches all 512 pages of it, each as its own walk gives it
        for vaddr, paddr, size in dump.virtual_segments():
            if vaddr < 0xFFFFFFFF80000000:                        # the direct map (the image is linear)
                mem._cache.clear()
                assert mem.vtop(vaddr + 0x1234) == paddr + 0x1234
                assert len(mem._cache) == 512
                assert all(cached == mem.arch.walk(mem, page) for page, cached in mem._cache.items())
        assert dmesg_bytes(mem) == expected_dmesg["x86_64"]


@pytest.mark.parametrize("arch", ARCHES)
def test_unprintable_bytes_escaped_like_vmcore_dmesg(arch, mini_vmcores, tmp_path):
    data = bytearray(mini_vmcores[arch].read_bytes())
    at = data.find(b"Linux version")
    while at != -1:            # the banner page and the log's record
        data[at:at + 6] = b"\x01\x7f\xff\x1b\x09\x0b"
        at = data.find(b"Linux version", at + 1)
    f = tmp_path / "v.elf"
    f.write_bytes(bytes(data))
    ref = subprocess.run([oracle("vmcore-dmesg", "kexec-tools"), str(f)], capture_output=True, check=True).stdout
    with open_dump(str(f)) as dump:
        assert dmesg_bytes(KernelMemory(dump)) == ref
    assert b"\\x01\\x7f\\xff\\x1b\t\x0bversion" in ref


@pytest.mark.parametrize("arch", ARCHES)
def test_corrupt_record_is_skipped_and_reported(arch, mini_vmcores, expected_dmesg, tmp_path):
    data = bytearray(mini_vmcores[arch].read_bytes())
    line = next(l for l in expected_dmesg[arch].splitlines() if b"Kernel command line" in l)
    text = line.split(b"] ", 1)[1]
    at = data.rfind(text)                      # the record's text in the data ring
    data[at - 8:at] = b"\xde\xad\xbe\xef\xde\xad\xbe\xef"   # its block's descriptor id
    f = tmp_path / "c.elf"
    f.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "kexecfw", "vmcore", "dmesg", str(f)], capture_output=True)
    assert r.returncode == 0
    assert r.stdout == expected_dmesg[arch].replace(line + b"\n", b"")
    assert b"printk record seq" in r.stderr and b"skipped" in r.stderr and r.stderr.count(b"\n") == 1


@pytest.mark.parametrize("argv", [["vmcore", "dmesg"]])
def test_dmesg_path_imports_only_what_it_needs(argv, mini_vmcores):
    """The capture path: no pluggy, pyelftools, fdt, plotting or dataclasses (start-up time)."""
    heavy = ("pluggy", "elftools", "fdt", "matplotlib", "ipywidgets", "dataclasses", "zstandard")
    # main(), not the kexecfw command: that ends this fast path with os._exit, before the probe
    probe = ("import sys; from kexecfw.cli import main; main(sys.argv[1:]); sys.stdout.flush()\n"
             f"sys.stderr.write(repr(sorted(m for m in {heavy!r} if m in sys.modules)))\n")
    r = subprocess.run([sys.executable, "-c", probe, *argv, str(mini_vmcores["x86_64"])], capture_output=True)
    assert r.stderr.decode().strip().endswith("[]"), r.stderr
    assert b"Kernel panic - not syncing" in r.stdout
