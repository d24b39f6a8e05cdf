"""kdump.toml: defaults, every key, and every error path as one line naming the key and the file."""
from __future__ import annotations

import pytest

from kexecfw.errors import BadInputError
from kexecfw.kdump.config import DEFAULT_TEXT, KdumpConfig, SshTarget, load_config, parse_config
from kexecfw.sysroot import Sysroot

SRC = "/etc/kexecfw/kdump.toml"


def test_default_text_is_the_defaults():
    assert parse_config(DEFAULT_TEXT, SRC) == KdumpConfig()


def test_missing_file_is_the_defaults(tmp_path):
    config = load_config(Sysroot(tmp_path))
    assert config == KdumpConfig() and config.source is None


def test_every_key():
    config = parse_config("""
[target]
path = "/dumps"
ssh = "kdump@backup.example"
ssh_key = "/root/.ssh/k"
ssh_port = 2222
wait = 120
[dump]
level = 17
codec = "zstd"
keep = 0
min_free = "1G"
[capture]
kernel = "/boot/vmlinuz-x"
initrd = "/boot/initrd-x"
append = "nr_cpus=2 irqpoll"
remove = ["quiet", "splash="]
crashkernel = "512M"
[actions]
final = "poweroff"
failure = "shell"
[hooks]
pre = "/etc/pre"
post = "/etc/post"
""", SRC)
    assert config.ssh == SshTarget("kdump", "backup.example", 2222, "/root/.ssh/k") and config.wait == 120
    assert (config.path, config.level, config.codec, config.keep, config.min_free_bytes) == ("/dumps", 17, "zstd", 0, 1 << 30)
    assert config.remove == ("quiet", "splash")
    assert (config.final_action, config.failure_action, config.crashkernel) == ("poweroff", "shell", "512M")
    assert (config.pre_hooks, config.post_hooks, config.kernel, config.initrd) == \
        ("/etc/pre", "/etc/post", "/boot/vmlinuz-x", "/boot/initrd-x")


def test_device_target():
    assert parse_config('[target]\ndevice = "LABEL=crash"\npath = "/kdump"', SRC).device == "LABEL=crash"


@pytest.mark.parametrize("text, words", [
    ('[dump]\nlevle = 31', ["dump.levle", "did you mean level?"]),
    ('[dumps]\nlevel = 31', ["[dumps]", "did you mean dump?"]),
    ('[dump]\nzzz = 1', ["dump.zzz", "known: level, codec, keep, min_free"]),
    ('dump = 3', ["dump must be a section"]),
    ('[dump]\nlevel = "31"', ["dump.level must be an integer", "str"]),
    ('[dump]\nlevel = true', ["dump.level must be an integer", "bool"]),
    ('[dump]\nlevel = 32', ["dump.level", "32 is not in 0..31"]),
    ('[dump]\ncodec = "gzip"', ["dump.codec", "'gzip' is not one of zlib, zstd, lzo, none"]),
    ('[dump]\nkeep = -1', ["dump.keep", "-1 is not in 0..10000"]),
    ('[dump]\nmin_free = "lots"', ["dump.min_free", "'lots' is not a size"]),
    ('[target]\npath = "var/crash"', ["target.path", "not an absolute path"]),
    ('[target]\ndevice = "/dev/sdb1"', ["target.device", "UUID=<uuid>"]),
    ('[target]\nssh = "backup.example"', ["target.ssh", "not user@host"]),
    ('[target]\nssh = "a@b"\nssh_port = 0', ["target.ssh_port", "0 is not in 1..65535"]),
    ('[target]\nwait = 3601', ["target.wait", "3601 is not in 0..3600"]),
    ('[target]\nwait = "60s"', ["target.wait must be an integer"]),
    ('[target]\nssh_port = 22', ["target.ssh_port is set but target.ssh is not"]),
    ('[target]\nssh = "a@b"\ndevice = "UUID=1"', ["target.ssh and target.device are both set"]),
    ('[capture]\nremove = "quiet"', ["capture.remove must be a list of strings"]),
    ('[capture]\nremove = ["a b"]', ["capture.remove", "'a b' is not a kernel parameter name"]),
    ('[capture]\ncrashkernel = "big"', ["capture.crashkernel", "'big' is not a size"]),
    ('[capture]\nappend = "a\\nb"', ["capture.append", "one line"]),
    ('[actions]\nfinal = "shell"', ["actions.final", "'shell' is not one of reboot, poweroff"]),
    ('[actions]\nfailure = "halt"', ["actions.failure", "'halt' is not one of reboot, poweroff, shell"]),
    ('[hooks]\npre = "hooks"', ["hooks.pre", "not an absolute path"]),
    ('[dump\nlevel = 1', ["not valid TOML"]),
])
def test_errors_are_one_line_naming_file_and_key(text, words):
    with pytest.raises(BadInputError) as e:
        parse_config(text, SRC)
    message = e.value.message
    assert message.startswith(f"{SRC}: ") and "\n" not in message
    for w in words:
        assert w in message


def test_load_config_names_the_file_and_refuses_binary(tmp_path):
    root = Sysroot(tmp_path)
    path = tmp_path / "etc/kexecfw/kdump.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[dump]\nlevel = 99\n')
    with pytest.raises(BadInputError, match=rf"^{path}: dump.level: 99 is not in 0..31$"):
        load_config(root)
    path.write_bytes(b"\xff\xfe[dump]")
    with pytest.raises(BadInputError, match="not UTF-8"):
        load_config(root)
    path.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(BadInputError, match="larger than 1024 KiB"):
        load_config(root)
