"""A command's options as data: added to its argparse parser, and parsed without argparse on the fast path.

argparse costs a ``load -p`` in an emulated (TCG) guest more than a tenth of a second: the module
and gettext, ``re`` patterns compiled for every parser, and ``locale`` imported at parse time for
the translations of its messages. A command whose options are an :data:`Option` table gets both
from the one table: :func:`add_options` declares them to argparse (help, errors, everything
unusual), :func:`parse_plain` reads the plain command lines (each option spelt out, a value as
the next word or after ``=``) and returns None for anything else, which then goes to argparse.
So both give the same values, and every error message is argparse's.
"""
from __future__ import annotations

TYPE_CHECKING = False   # not typing.TYPE_CHECKING: see kexecfw.cli's start-up note
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence


class Option:
    """One option: its spellings, where its value goes, and how it is given.

    ``metavar`` set: the option takes a value (default None). Else it is a flag storing ``const``:
    a flag outside any ``group`` stores True (default False, argparse's store_true); in a group,
    its const (default None). Options sharing a ``group`` exclude each other.
    """

    __slots__ = ("flags", "dest", "metavar", "const", "group", "help")

    def __init__(self, flags: tuple[str, ...], dest: str, help: str, *, metavar: str | None = None,
                 const: object = True, group: str | None = None) -> None:
        self.flags, self.dest, self.metavar, self.const, self.group, self.help = \
            flags, dest, metavar, const, group, help

    @property
    def default(self) -> object:
        return False if self.metavar is None and self.group is None else None


def add_options(parser: argparse.ArgumentParser, positionals: Sequence[tuple[str, str, str]],
                options: Sequence[Option]) -> None:
    """Declare ``positionals`` (dest, metavar, help) and ``options`` to ``parser``."""
    for dest, metavar, help_text in positionals:
        parser.add_argument(dest, metavar=metavar, help=help_text)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for o in options:
        target = parser if o.group is None else groups.setdefault(o.group, parser.add_mutually_exclusive_group())
        if o.metavar is not None:
            target.add_argument(*o.flags, dest=o.dest, metavar=o.metavar, help=o.help)
        elif o.group is None:
            target.add_argument(*o.flags, dest=o.dest, action="store_true", help=o.help)
        else:
            target.add_argument(*o.flags, dest=o.dest, action="store_const", const=o.const, help=o.help)


def parse_plain(words: Sequence[str], positionals: Sequence[tuple[str, str, str]],
                options: Sequence[Option]) -> dict[str, object] | None:
    """The values argparse would give for ``words``, or None when they are not plain: an unknown or
    abbreviated option, grouped short flags, a value that starts with "-", ``--``, help, two options
    of one group, a missing or extra positional (argparse then parses them, or explains the error)."""
    by_flag = {flag: o for o in options for flag in o.flags}
    values: dict[str, object] = {o.dest: o.default for o in options}
    given: list[object] = []
    chosen: dict[str, Option] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-") or word == "-":
            given.append(word)
            continue
        name, eq, value = word.partition("=")
        o = by_flag.get(name if name.startswith("--") else word)
        if o is None or (eq and o.metavar is None) or chosen.setdefault(o.group or o.dest, o) is not o:
            return None
        if o.metavar is None:
            values[o.dest] = o.const
            continue
        if not eq:
            if i == len(words):
                return None
            value = words[i]
            i += 1
        if value.startswith("-"):
            return None
        values[o.dest] = value
    if len(given) != len(positionals):
        return None
    values.update((dest, word) for (dest, _, _), word in zip(positionals, given))
    return values
