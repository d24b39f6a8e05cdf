import pytest

from kexecfw.errors import BadInputError
from kexecfw.memory.iomem import parse_iomem, read_iomem
from kexecfw.memory.model import RegionKind
from kexecfw.memory.ranges import Range
from kexecfw.sysroot import Sysroot
from tests.conftest import fixture_path, real_sysroots


@pytest.mark.parametrize("root", real_sysroots(), ids=lambda p: p.parent.name)
def test_real_sysroots_have_ram_crash_region_and_kernel_code(root):
    m = read_iomem(Sysroot(root))
    assert m.ram_size >= 1 << 30
    crash = m.main_crash_region
    assert crash is not None and crash.size >= 128 << 20
    assert any(r.contains(crash) for r in m.system_ram)
    assert m.kernel_code is not None and any(r.contains(m.kernel_code) for r in m.system_ram)
    # the crash region is not dumped; everything else of RAM is
    assert not any(r.overlaps(crash) for r in m.crash_dump_ranges)
    assert sum(r.size for r in m.crash_dump_ranges) == m.ram_size - crash.size


def test_arm64_usable_ram_excludes_nested_reserved():
    m = read_iomem(Sysroot(fixture_path("arm64", "sysroot")))
    # kexec-tools' "System RAM ranges" for this guest (kexec-p-debug.txt) start like this
    assert m.usable_ram[0] == Range.inclusive(0x40000000, 0x4185FFFF)
    assert Range.inclusive(0x41EB0000, 0x47FFFFFF) in m.usable_ram


def test_host_snapshot_parses(host_snapshot):
    m = read_iomem(Sysroot(host_snapshot))
    assert m.ram_size > 0
    assert m.regions[0].depth == 0


def test_nested_depth_and_kinds():
    text = ("00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n"
            "00100000-7ffd9fff : System RAM\n  5d000000-74ffffff : Crash kernel\n"
            "  75400000-76201ef1 : Kernel code\nfee00000-fee00fff : Local APIC\n")
    m = parse_iomem(text)
    kinds = [(r.kind, r.depth) for r in m.regions]
    assert kinds == [(RegionKind.RESERVED, 0), (RegionKind.RAM, 0), (RegionKind.RAM, 0), (RegionKind.CRASH, 1),
                     (RegionKind.KERNEL_CODE, 1), (RegionKind.OTHER, 0)]
    assert m.main_crash_region == Range.inclusive(0x5D000000, 0x74FFFFFF)


def test_high_and_low_crash_regions():
    text = ("00100000-bfffffff : System RAM\n  a0000000-afffffff : Crash kernel\n"
            "100000000-23fffffff : System RAM\n  200000000-23fffffff : Crash kernel\n")
    m = parse_iomem(text)
    assert m.main_crash_region == Range(0x200000000, 0x240000000)
    assert m.crash_regions == [Range(0x200000000, 0x240000000), Range(0xA0000000, 0xB0000000)]


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("00000000-00000000 : System RAM\n00000000-00000000 : Crash kernel\n", "without root"),
    ("garbage line\n", "line 1"),
    ("00002000-00001000 : System RAM\n", "ends before it starts"),
])
def test_bad_iomem_gives_one_clear_error(text, words):
    with pytest.raises(BadInputError, match=words) as e:
        parse_iomem(text)
    assert "\n" not in e.value.message


from hypothesis import given, strategies as st  # noqa: E402

iomem_lines = st.lists(st.one_of(
    st.tuples(st.integers(0, 8), st.integers(0, 1 << 48), st.integers(0, 1 << 48),
              st.sampled_from(["System RAM", "reserved", "Crash kernel", "Kernel code", "PCI Bus", ""])).map(
        lambda t: f"{' ' * t[0]}{t[1]:x}-{t[2]:x} : {t[3]}"),
    st.text(max_size=40)), max_size=20)


@given(iomem_lines)
def test_any_iomem_text_parses_or_fails_with_one_line(lines):
    try:
        m = parse_iomem("\n".join(lines))
    except BadInputError as e:
        assert "\n" not in e.message
    else:
        assert all(r.size > 0 for r in m.regions)
        _ = (m.system_ram, m.usable_ram, m.crash_dump_ranges, m.main_crash_region)


def test_reuse_cmdline_drops_boot_image_and_crashkernel(tmp_path):
    from kexecfw.load import reuse_cmdline
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("BOOT_IMAGE=/boot/vmlinuz-6.1 root=UUID=1 ro crashkernel=256M quiet\n")
    assert reuse_cmdline(Sysroot(tmp_path), panic=True) == "root=UUID=1 ro quiet"
    assert reuse_cmdline(Sysroot(tmp_path), panic=False) == "root=UUID=1 ro crashkernel=256M quiet"
