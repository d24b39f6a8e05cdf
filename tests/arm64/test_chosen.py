"""/chosen for the next kernel, compared byte for byte with what a real capture kernel booted with."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kexecfw.memory.devicetree import DeviceTree
from kexecfw.memory.ranges import Range
from kexecfw.dtboot import update_chosen
from tests.conftest import fixture_path, oracle

CAPTURE_CMDLINE = "console=ttyAMA0 maxcpus=1 reset_devices irqpoll panic=-1 lab.capture=1"
# What kexec-tools placed in that run (fixtures/arm64/kexec-tools/kexec-p-debug.txt).
INITRD = Range(0xA3A10000, 0xA3A10000 + 3147352)
ELFCOREHDR = Range(0xB99FF000, 0xB99FF400)
CRASH = Range(0xA1A00000, 0xB9A00000)


@pytest.fixture()
def first_kernel_tree() -> DeviceTree:
    return DeviceTree.from_file(fixture_path("arm64", "sysroot", "sys", "firmware", "fdt"))


def capture_chosen() -> dict[str, bytes]:
    folder = fixture_path("arm64", "capture", "chosen")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "name"}


def test_panic_chosen_equals_what_the_capture_kernel_booted_with(first_kernel_tree: DeviceTree) -> None:
    seeds = iter([bytes.fromhex("0123456789abcdef")])
    changes = update_chosen(first_kernel_tree, cmdline=CAPTURE_CMDLINE, initrd=INITRD, elfcorehdr=ELFCOREHDR,
                            usable=[CRASH], random_bytes=lambda n: next(seeds)[:n])
    ours = DeviceTree.from_bytes(first_kernel_tree.to_bytes()).properties("/chosen")
    theirs = capture_chosen()
    assert set(ours) == set(theirs)
    for name in theirs:
        if name == "kaslr-seed":
            continue    # the capture kernel zeroes it after use; ours is fresh
        if name == "bootargs":
            # kexec-tools 2.0.25 writes the string with two NULs; one terminates it
            assert ours[name] == theirs[name].rstrip(b"\0") + b"\0"
            continue
        assert ours[name] == theirs[name], name
    assert ours["kaslr-seed"] == bytes.fromhex("0123456789abcdef")
    assert theirs["linux,initrd-end"] == (0xA3D10658).to_bytes(8, "big")   # exact end, not page-rounded
    assert any(c.startswith("refreshed kaslr-seed") for c in changes)


def test_normal_load_removes_crash_properties_and_initrd(first_kernel_tree: DeviceTree) -> None:
    update_chosen(first_kernel_tree, cmdline=CAPTURE_CMDLINE, initrd=INITRD, elfcorehdr=ELFCOREHDR,
                  usable=[CRASH])
    # A capture kernel's tree now: kexec from it without initrd must not inherit any of that.
    changes = update_chosen(first_kernel_tree, cmdline="console=ttyAMA0", initrd=None, elfcorehdr=None, usable=None)
    chosen = first_kernel_tree.properties("/chosen")
    for stale in ("linux,elfcorehdr", "linux,usable-memory-range", "linux,initrd-start", "linux,initrd-end"):
        assert stale not in chosen
        assert f"removed {stale}" in changes
    assert chosen["bootargs"] == b"console=ttyAMA0\0"


def test_rng_seed_is_refreshed_with_its_length(first_kernel_tree: DeviceTree) -> None:
    first_kernel_tree.set("/chosen", "rng-seed", bytes(64))
    update_chosen(first_kernel_tree, cmdline="x", initrd=None, elfcorehdr=None, usable=None)
    seed = first_kernel_tree.get("/chosen", "rng-seed")
    assert seed is not None and len(seed) == 64 and seed != bytes(64)
    assert first_kernel_tree.get("/chosen", "kaslr-seed") != bytes(8)


def test_old_initrd_memreserve_is_dropped() -> None:
    dts = b"""/dts-v1/; /memreserve/ 0x48000000 0x2f5000;
    / { #address-cells = <2>; #size-cells = <2>;
        chosen { linux,initrd-start = <0x48000000>; linux,initrd-end = <0x482f4650>; }; };"""
    blob = subprocess.run([oracle("dtc", "device-tree-compiler"), "-q", "-I", "dts", "-O", "dtb"], input=dts,
                          capture_output=True, check=True).stdout
    tree = DeviceTree.from_bytes(blob)
    assert tree.memreserve == [Range(0x48000000, 0x482F5000)]
    update_chosen(tree, cmdline="x", initrd=None, elfcorehdr=None, usable=None)
    assert tree.memreserve == []


def test_everything_outside_chosen_is_unchanged(first_kernel_tree: DeviceTree, tmp_path: Path) -> None:
    before = dict(first_kernel_tree.walk())
    update_chosen(first_kernel_tree, cmdline=CAPTURE_CMDLINE, initrd=INITRD, elfcorehdr=ELFCOREHDR, usable=[CRASH])
    after = dict(DeviceTree.from_bytes(first_kernel_tree.to_bytes()).walk())
    assert before.keys() == after.keys()
    assert {k: v for k, v in before.items() if k != "/chosen"} == {k: v for k, v in after.items() if k != "/chosen"}
