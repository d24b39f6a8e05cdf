"""tests/conftest.py's oracle helpers: a missing outside tool is a skip that says what to install, and a
failure where every oracle must be there ($KEXECFW_REQUIRE_ORACLES=1, as CI sets it)."""
from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_ORACLES_ENV, oracle, oracle_module


def test_a_present_oracle_is_its_path(monkeypatch, tmp_path):
    tool = tmp_path / "vmcore-dmesg"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert oracle("vmcore-dmesg", "kexec-tools") == str(tool)


def test_a_missing_oracle_skips_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(REQUIRE_ORACLES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^oracle makedumpfile missing: apt-get install makedumpfile$"):
        oracle("makedumpfile", "makedumpfile")
    with pytest.raises(pytest.skip.Exception, match=r"^oracle Python module no_such_oracle missing: pip install x$"):
        oracle_module("no_such_oracle", "pip install x")


def test_a_missing_oracle_fails_where_oracles_are_required(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(REQUIRE_ORACLES_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"^oracle dtc missing: apt-get install device-tree-compiler "
                                                    r"\(\$KEXECFW_REQUIRE_ORACLES=1\)$"):
        oracle("dtc", "device-tree-compiler")
    with pytest.raises(pytest.fail.Exception, match=r"^oracle Python module no_such_oracle missing"):
        oracle_module("no_such_oracle", "pip install x")
