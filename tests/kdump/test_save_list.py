"""The capture boot's save run for real on the real guests' mini vmcores into a temporary target (the final
action recorded, not run), then `kdump list` and the self-test result in `kdump status`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kexecfw.kdump.dumps import list_dumps, panic_line
from tests.conftest import REPO
from tests.kdump.conftest import kdump, recorded

HOOK = "#!/bin/sh\necho \"$0 $1\" >> {log}\nexit {code}\n"


def _hooks(root, log, post_code=0):
    for kind, code in (("pre", 0), ("post", post_code)):
        d = root / f"etc/kexecfw/kdump-{kind}.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"10-{kind}").write_text(HOOK.format(log=log, code=code))
        (d / f"10-{kind}").chmod(0o755)
        (d / "20-not-executable").write_text("#!/bin/sh\nexit 1\n")


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_save_then_list(root, tmp_path, mini_vmcores, expected_dmesg, arch):
    log = tmp_path / "hooks.log"
    _hooks(root, log, post_code=7)
    (root / "etc/kexecfw/kdump.toml").write_text('[dump]\nkeep = 2\nmin_free = "1M"\n[actions]\nfinal = "poweroff"\n')
    for _ in range(3):
        saved = kdump(root, "save", "--vmcore", str(mini_vmcores[arch]), "--json")
        assert saved.returncode == 0, saved.stderr
    doc = json.loads(saved.stdout)
    assert doc["error"] is None and doc["action"] == "poweroff"
    assert [h["result"] for h in doc["pre_hooks"]] == [0] and [h["result"] for h in doc["post_hooks"]] == [7]
    assert "hook /etc/kexecfw/kdump-post.d/10-post failed (7); going on" in saved.stderr
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "poweroff"]
    hook_lines = log.read_text().splitlines()
    assert len(hook_lines) == 6 and hook_lines[-2].endswith(f"10-pre {root}/var/crash")
    assert hook_lines[-1].endswith(f"10-post {doc['saved']}")
    # keep = 2: the oldest of the three saves was removed
    assert len(doc["removed"]) == 1 and len(list((root / "var/crash").iterdir())) == 2
    saved_dir = root / "var/crash" / doc["saved"].rsplit("/", 1)[1]
    assert (saved_dir / "dmesg.txt").read_bytes() == expected_dmesg[arch]

    listed = kdump(root, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    dumps = json.loads(listed.stdout)["dumps"]
    assert len(dumps) == 2 and all(d["complete"] for d in dumps)
    release = json.loads((saved_dir / "summary.json").read_text())["osrelease"]
    assert dumps[-1]["release"] == release and release.startswith("6.1.0-56")
    assert dumps[-1]["panic"] == panic_line(expected_dmesg[arch]) == "Kernel panic - not syncing: sysrq triggered crash"
    assert dumps[-1]["size"] > 0
    text = kdump(root, "list").stdout
    assert release in text and "complete" in text and "Kernel panic - not syncing: sysrq triggered crash" in text


def test_interrupted_and_failed_saves_are_incomplete(root, mini_vmcores, expected_dmesg):
    crash = root / "var/crash"
    (crash / "20260101-000000").mkdir()
    (crash / "20260101-000000/dmesg.txt").write_bytes(b"[ 1.0] Kernel panic - not syncing: Fatal exception\n")
    (crash / "not-a-dump").mkdir()
    (root / "etc/kexecfw").mkdir(parents=True)
    # a floor above any free space: no dump, but the log and a summary saying why; the failure action follows
    (root / "etc/kexecfw/kdump.toml").write_text('[dump]\nmin_free = "1000000T"\n[actions]\nfailure = "shell"\n')
    failed = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
    assert failed.returncode == 4
    doc = json.loads(failed.stdout)
    assert "floor (dump.min_free): no dump written" in doc["error"] and doc["action"] == "shell"
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "isolate", "emergency.target"]
    dumps = list_dumps(str(crash))
    assert [d.name for d in dumps][0] == "20260101-000000" and len(dumps) == 2
    assert not dumps[0].complete and dumps[0].why_incomplete == "no summary.json: the save did not finish"
    assert dumps[0].panic == "Kernel panic - not syncing: Fatal exception"
    new = dumps[1]
    assert not new.complete and "floor (dump.min_free)" in new.why_incomplete
    assert sorted(os.listdir(new.directory)) == ["dmesg.txt", "summary.json"]
    assert (Path(new.directory) / "dmesg.txt").read_bytes() == expected_dmesg["x86_64"]


def test_missing_vmcore_ends_in_the_failure_action(root, tmp_path):
    failed = kdump(root, "save", "--vmcore", str(tmp_path / "nothing"), "--json")
    assert failed.returncode == 3
    doc = json.loads(failed.stdout)
    assert doc["action"] == "reboot" and doc["saved"] is None
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "reboot"]


def test_self_test_result_in_status(root, mini_vmcores):
    # an armed root: a loaded crash kernel (as this root's /sys says) and what `kdump load` recorded
    from kexecfw.kdump import SELFTEST_JSON
    from kexecfw.kdump.state import write_state
    from kexecfw.sysroot import Sysroot
    write_state(Sysroot(root), SELFTEST_JSON, {"schema": 1, "time": 1_000_000_000, "crashed": True})
    before = json.loads(kdump(root, "status", "--json").stdout)["selftest"]
    assert before["result"] == "no dump arrived after the test's crash"
    assert kdump(root, "save", "--vmcore", str(mini_vmcores["arm64"])).returncode == 0
    after = json.loads(kdump(root, "status", "--json").stdout)["selftest"]
    assert after["result"] == "passed" and after["started"] == "2001-09-09T01:46:40Z"


def _modules_after(argv: list[str]) -> set[str]:
    code = ("import sys\nfrom kexecfw.cli import main\nmain(sys.argv[1:])\n"
            "sys.stdout.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=300)
    return set(out.stdout.rsplit("MODULES ", 1)[1].split())


def test_save_imports_stay_light(root, tmp_path, mini_vmcores):
    """The capture boot's `kdump save` imports neither the architecture plugins (pluggy) nor the kernel
    symbol table reader, nor the load flow: it runs in the crash reservation. Beyond what `vmcore save
    --dir` needs it adds only its own modules, the root it acts on and the standard library's TOML, difflib and subprocess."""
    vmcore = str(mini_vmcores["x86_64"])
    plain = _modules_after(["vmcore", "save", "--input", vmcore, "--dir", str(tmp_path / "plain"), "--min-free", "1M"])
    ours = _modules_after(["kdump", "--root", str(root), "save", "--vmcore", vmcore])
    assert not {"pluggy", "kexecfw.pluginmanager", "kexecfw.vmcore.kallsyms", "kexecfw.load"} & ours, \
        sorted({"pluggy", "kexecfw.pluginmanager", "kexecfw.vmcore.kallsyms", "kexecfw.load"} & ours)
    assert {"kexecfw.vmcore.writer", "kexecfw.kdump.target"} <= ours      # the list is that of a real save
    # its own modules, the root it acts on (kexecfw.sysroot and the memory ranges it parses)
    extra = {m for m in ours - plain if not m.startswith(("kexecfw.kdump", "kexecfw.cli.kdump", "kexecfw.guard", "tomllib",
                                                          "kexecfw.sysroot", "kexecfw.memory"))}
    assert extra <= {"difflib", "subprocess", "selectors", "signal", "calendar", "locale", "_locale", "heapq",
                     "_heapq", "_posixsubprocess", "select", "fcntl", "contextlib", "threading", "_strptime",
                     "_bisect", "bisect", "datetime", "_datetime", "math"}, extra
    assert "matplotlib" not in ours


def test_a_typo_made_after_the_load_still_saves_with_the_defaults(root, mini_vmcores, expected_dmesg):
    """kdump.toml broken between the load and the crash: the capture boot saves with the defaults (dmesg and
    dump in /var/crash on the root filesystem, then reboot) and says the configuration's error."""
    (root / "etc/kexecfw").mkdir(parents=True)
    (root / "etc/kexecfw/kdump.toml").write_text('[dump]\nlevle = 1\nmin_free = "1M"\n[actions]\nfinal = "poweroff"\n')
    error = f"{root}/etc/kexecfw/kdump.toml: unknown key dump.levle (did you mean level?)"
    saved = kdump(root, "save", "--vmcore", str(mini_vmcores["x86_64"]), "--json")
    assert saved.returncode == 0, saved.stderr
    doc = json.loads(saved.stdout)
    assert doc["error"] is None and doc["config_error"] == error and doc["action"] == "reboot"
    assert saved.stderr.splitlines()[0] == (f"kexecfw kdump: {error}: saving with the defaults instead "
                                            "(/var/crash on the root filesystem, then reboot)")
    assert recorded(root)[-1]["argv"] == ["systemctl", "--no-block", "reboot"]
    crash_dir = root / "var/crash" / doc["saved"].rsplit("/", 1)[1]
    assert sorted(os.listdir(crash_dir)) == ["dmesg.txt", "summary.json", "vmcore.kdump"]
    assert (crash_dir / "dmesg.txt").read_bytes() == expected_dmesg["x86_64"]
    summary = json.loads((crash_dir / "summary.json").read_text())
    assert summary["complete"] and summary["config_error"] == error and summary["dump_level"] == 31
