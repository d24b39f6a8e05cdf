"""The argparse classes of every kexecfw command; imported only when a parser is built.

argparse asks shutil for the terminal width each time it makes a help formatter (on every
add_argument), and importing shutil pulls in bz2 and lzma: ~25 ms of a load in an emulated
guest. The width is found here as shutil would find it, with os alone.
"""
from __future__ import annotations

import argparse
import os
import sys


def terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80 (shutil.get_terminal_size's order)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else terminal_columns() - 2)


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser with :class:`HelpFormatter`; subparsers are made with the parent's
    class, so every command's parser gets it."""

    def __init__(self, *args, formatter_class: type = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
