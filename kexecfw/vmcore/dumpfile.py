"""What every dump format offers: physical memory by address, the notes, VMCOREINFO.

The ELF reader (/proc/vmcore, saved ELF dumps) and the kdump-compressed reader
(makedumpfile's format, plain or flattened) both implement :class:`DumpFile`;
everything above them (address translation, dmesg, notes, the writer) only
uses this interface.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: the dmesg path does not import typing

from kexecfw.elfnotes import NT_PRSTATUS, VMCOREINFO_NOTE_NAME, Note
from kexecfw.errors import BadInputError
from kexecfw.records import TupleRecord
from kexecfw.vmcoreinfo import VmcoreInfo

if TYPE_CHECKING:
    from typing import Callable, Iterator


class MemoryMissing(BadInputError):
    """A physical address the dump does not hold (a hole, or a page the dump level excluded)."""

    def __init__(self, paddr: int, what: str = "", excluded: bool = False) -> None:
        where = f" ({what})" if what else ""
        super().__init__(f"physical address {paddr:#x}{where} is not in the dump; "
                         "was it filtered out (dump level) or is the dump truncated?")
        self.paddr = paddr
        self.excluded = excluded     # RAM the dump level filtered out (reads as zeros for some readers)


class MemoryLost(MemoryMissing):
    """A page the dump says it holds that cannot be read intact: its descriptor or data lies past the
    end of a file cut short, or is corrupt, or does not decompress. Lost, not merely absent: a copy
    of the dump without it is incomplete."""

    def __init__(self, paddr: int, why: str) -> None:
        super().__init__(paddr, why)
        self.args = (f"physical address {paddr:#x} cannot be read from the dump: {why}",)
        self.why = why


def summarize_ranges(ranges: list[tuple[int, int]], count: int | None = None, shown: int = 3) -> str:
    """``[start, end)`` ranges for a one-line message: the first ``shown`` and how many more of
    ``count`` in all (default: as many as given)."""
    text = ", ".join(f"{s:#x}..{e:#x}" for s, e in ranges[:shown])
    more = (len(ranges) if count is None else count) - min(shown, len(ranges))
    return text + (f" and {more} more range{'s' if more > 1 else ''}" if more > 0 else "")


class PhysRange(TupleRecord):
    """Physical memory [start, end) the dump covers, with its kernel virtual address if known."""
    __slots__ = ()
    start: int
    end: int
    vaddr: int | None = None


class DumpFile:
    """Base of the readers. Subclasses fill the attributes and implement ``read_phys``."""

    path: str
    format: str            # "elf", "kdump", "flattened-kdump"
    machine: int           # ELF e_machine (EM_X86_64, EM_AARCH64 ...)
    notes: list[Note]
    page_size: int

    def _attach(self, path: str, parse: Callable[[], None]) -> None:
        """Open ``path`` read-only as ``self._fd`` and run ``parse``; the descriptor is closed if it fails."""
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise BadInputError(f"cannot open {path}: {e.strerror}") from None
        try:
            parse()
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> "DumpFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and its mappings."""

    # --- memory -------------------------------------------------------------------------
    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at physical ``paddr``; raises MemoryMissing for a hole or an excluded page."""
        raise NotImplementedError

    def ranges(self) -> list[PhysRange]:
        """Physical ranges present in the dump (for ELF: the PT_LOADs, merged where adjacent)."""
        raise NotImplementedError

    def has_page(self, pfn: int) -> bool:
        """Is page frame ``pfn`` readable from this dump?"""
        raise NotImplementedError

    def max_pfn(self) -> int:
        """One past the highest page frame number the dump describes."""
        return max((r.end + self.page_size - 1) // self.page_size for r in self.ranges()) if self.ranges() else 0

    def missing_memory(self) -> str | None:
        """Why memory this dump's headers describe is not in it (a file cut short, a save stopped by a
        full disk), or None when it holds all it claims. A copy of such a dump is incomplete too."""
        return None

    def lost_pages(self) -> int:
        """Pages the dump's headers describe that it does not offer at all (not in ``ranges()``): the
        memory of an ELF dump's PT_LOADs past the end of a file cut short. Pages that are offered but
        fail to read raise MemoryLost instead."""
        return 0

    def iter_present_pfns(self) -> Iterator[tuple[int, int]]:
        """(first_pfn, end_pfn) runs of pages present, in address order."""
        for r in self.ranges():
            lo = r.start // self.page_size
            hi = (r.end + self.page_size - 1) // self.page_size
            if hi > lo:
                yield lo, hi

    # --- notes --------------------------------------------------------------------------
    def vmcoreinfo_bytes(self) -> bytes | None:
        for note in self.notes:
            if note.name == VMCOREINFO_NOTE_NAME:
                return note.desc
        return None

    _vmcoreinfo: VmcoreInfo | None = None

    @property
    def vmcoreinfo(self) -> VmcoreInfo:
        """The crashed kernel's VMCOREINFO; raises BadInputError when the dump has none."""
        if self._vmcoreinfo is None:
            raw = self.vmcoreinfo_bytes()
            if raw is None:
                raise BadInputError(f"{self.path} has no VMCOREINFO note: it is not a kernel crash dump "
                                    "(or the kernel was built without CONFIG_VMCORE_INFO)")
            self._vmcoreinfo = VmcoreInfo.parse(raw)
        return self._vmcoreinfo

    def prstatus_notes(self) -> list[Note]:
        return [n for n in self.notes if n.type == NT_PRSTATUS and n.name == b"CORE"]
