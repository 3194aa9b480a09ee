"""Words for a person: counts in words, and prose wrapped at the terminal's width."""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import TextIO

import click


def plural(count: int, noun: str, nouns: str = "") -> str:
    """The count and the noun, plural unless the count is 1 (`nouns` for an irregular plural)."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def prose_width(stream: TextIO | None = None) -> int | None:
    """The terminal's width when the stream (stdout) is one; None through a pipe or into a
    file, where lines stay whole for whoever reads them next."""
    return shutil.get_terminal_size().columns if (stream or sys.stdout).isatty() else None


def echo_prose(text: str, err: bool = False) -> None:
    """click.echo(text), each of its lines wrapped at words when it goes to a terminal."""
    width = prose_width(sys.stderr if err else sys.stdout)
    click.echo("\n".join(wrap_prose(text.split("\n"), width)), err=err)


def wrap_prose(lines: list[str], width: int | None) -> list[str]:
    """Prose lines wrapped at words to width, continuing one step further in."""
    if not width:
        return lines
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()))
        out += textwrap.wrap(
            line,
            width,
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [""]
    return out
