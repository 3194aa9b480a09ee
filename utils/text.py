"""Words for a person: counts in words, and prose wrapped at the terminal's width.

Plain text only: printing it is the command line's (utils/cli.py's echo_prose).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from typing import TextIO


def plural(count: int, noun: str, nouns: str = "") -> str:
    """The count and the noun, plural unless the count is 1 (`nouns` for an irregular plural)."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def terminal_width(stream: TextIO) -> int:
    """The width of the stream's terminal: COLUMNS if set, else what the terminal says, else 80.

    The stream's own: stderr may go to a terminal while stdout goes to a pipe.
    """
    env = os.environ.get("COLUMNS", "")
    if env.isdecimal() and int(env) > 0:
        return int(env)
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return columns or 80


def prose_width(stream: TextIO | None = None) -> int | None:
    """terminal_width() of the stream (stdout) when it is a terminal; None through a pipe or
    into a file, where lines stay whole for whoever reads them next."""
    stream = stream or sys.stdout
    return terminal_width(stream) if stream.isatty() else None


def prose(text: str, stream: TextIO) -> str:
    """The text as it should reach stream: each line wrapped at words when stream is a
    terminal, whole otherwise."""
    return "\n".join(wrap_prose(safe_lines(text).split("\n"), prose_width(stream)))


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


#: C0 controls, DEL, C1 controls, and the bidi overrides and isolates (U+202A-202E,
#: U+2066-2069), which make a terminal run commands, retitle itself, or show text reversed.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


#: _UNSAFE but for the newline and the tab, which our own lines and tables use.
_UNSAFE_IN_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


#: The escapes a reader knows by name (Python's and C's), the rest as \\xNN or \\uNNNN.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(m: re.Match[str]) -> str:
    c = ord(m[0])
    return _NAMED.get(m[0]) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")


def safe(text: str, limit: int | None = None) -> str:
    """Text from a task made safe for a terminal and a log line: every control character,
    DEL, C1 control and bidi override shown escaped (ESC as \\x1b, U+202E as \\u202e), and a
    backslash as \\\\ so a reader can tell them apart. Cut to `limit` characters (with …)
    after escaping, so that no sequence is left open."""
    out = _UNSAFE.sub(_escaped, text.replace("\\", "\\\\"))
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "…"
    return out


def safe_lines(text: str) -> str:
    """Lines of ours that quote text from a task, a log or the broker, made safe to print:
    every control character but the newline and the tab, and every C1 control and bidi
    override, shown escaped as safe() shows it. The last guard before a terminal: a field
    should have gone through safe() already (which also doubles its backslashes, so these
    are left as they are)."""
    return _UNSAFE_IN_LINES.sub(_escaped, text)
