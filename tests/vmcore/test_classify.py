"""Page types as VMCOREINFO describes them, before and after Linux 6.12's page_type rework."""
from __future__ import annotations

from kexecfw.vmcore.classify import page_type_test


def test_pre_612_types_are_a_cleared_bit_under_page_type_base():
    buddy = page_type_test(-129)            # ~PG_buddy, PG_buddy = 0x80 (6.1's VMCOREINFO value)
    assert buddy(-129) and buddy(0xFFFFFF7F)
    assert not buddy(-1) and not buddy(0) and not buddy(3)      # ordinary pages: _mapcount -1, 0, n
    offline = page_type_test(-257)          # ~PG_offline
    assert offline(-257) and not offline(-129)


def test_612_types_are_the_top_byte():
    buddy = page_type_test(0xF0 << 24)
    assert buddy(0xF0000000) and buddy(0xF0000007 - (1 << 32))   # low bits are the type's own data
    assert not buddy(-1) and not buddy(0xF1000000) and not buddy(5)


def test_missing_value_never_matches():
    t = page_type_test(None)
    assert not t(-129) and not t(0)
