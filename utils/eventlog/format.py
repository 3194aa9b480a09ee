"""One log line: formatting it and parsing it back. The line is the interface (schema.py).

    ts=2026-11-26T23:59:01.123Z event=started worker=host-42 task=20261126T235900-ab12-3 row=3 ...

One event per line, `key=value` pairs, time and event first. A value with a space, a quote,
an equals sign, a control character (C0, DEL, C1, a bidi override) or nothing in it is
written as a JSON string, those characters as \\u escapes: no line carries one raw. Old
logs must always read: the format stays byte for byte what it is.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from json.encoder import encode_basestring
from typing import Any, Protocol

#: A value written as it is: no space, quote or equals sign, and none of the characters
#: that act on a terminal (C0, DEL, C1, bidi overrides; utils/text.py), so that `tail -f`
#: of a log file runs nothing a task said. \Z: $ would let a trailing newline through.
_BARE = re.compile('^[^\\s"=\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]+\\Z')
#: What a JSON string from encode_basestring may still hold raw: DEL, C1 and the bidi
#: overrides (it escapes only C0). Written as \\uXXXX, which json.loads reads back exactly.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: key=value (a JSON string, or bare up to the next space) and the spaces after it; else
#: any one character (group 3), which means the line is not in our format.
_PAIRS = re.compile(r'(\w+)=("[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)(?:\s+|\Z)|(.)', re.S)

#: Bodies are shortened to this many characters in log lines.
BODY_CHARS = 60


#: (second, "YYYY-MM-DDTHH:MM:SS.") of the last time stamp: most lines share their second
#: with the one before, and formatting a datetime cost more than the rest of the stamp.
_second: tuple[int, str] = (-1, "")
#: "000Z" to "999Z": the end of a stamp, looked up rather than formatted.
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def now_iso() -> str:
    """The current UTC time, to the millisecond, as the logs write it."""
    global _second
    sec, ms = divmod(time.time_ns() // 1_000_000, 1000)
    second = _second  # one read: another thread may replace it meanwhile
    if second[0] != sec:
        second = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    return second[1] + _MILLIS[ms]


#: The times a line may carry: a stamp outside them is no time of ours (ts=0001-01-01...
#: would make every sum with a duration overflow), and the line is skipped as unreadable.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)


def read_int(value: str | None, bound: int) -> int | None:
    """A whole number read from a line, or None: decimal digits (a leading '-' allowed),
    no larger than bound either way. Any length is refused cheaply, before int() (which
    takes "²" for a digit no more than str.isdecimal does, and refuses 4,300 digits or more)."""
    if not value or len(value) > len(str(bound)) + 1 or not value.lstrip("-").isdecimal():
        return None
    n = int(value)
    return n if -bound <= n <= bound else None


def parse_ts(value: str) -> datetime:
    """A log line's time; ValueError when it is not one, or outside EARLIEST..LATEST."""
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    utc = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"time out of range ({EARLIEST.year} to {LATEST.year}): {value}")
    return ts


def _value(v: Any) -> str:
    # Exact types first: a worker formats about 15 values a task, most of them str or int.
    t = type(v)
    if t is str:
        s = v
    elif t is int:
        return str(v)  # digits and a sign: never quoted
    elif isinstance(v, bool):
        return "true" if v else "false"
    elif isinstance(v, float):
        return f"{v:.3f}"
    else:
        s = str(v)
    # encode_basestring is what json.dumps(s, ensure_ascii=False) calls, without the
    # encoder object that json.dumps builds for every call.
    return s if _is_bare(s) else _quoted(s)


def _quoted(s: str) -> str:
    """s as a JSON string with no raw control character, C1 or bidi override in it."""
    q = encode_basestring(s)
    if q.isprintable():  # DEL, C1 and the overrides are not; most text is
        return q
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", q)


def _is_bare(s: str) -> bool:
    """_BARE.match(s), in about half the instructions for the usual printable text.

    A printable str holds no whitespace but the ASCII space, so three `in` tests settle it;
    the regex (whose set-up alone is most of its cost) only sees the rest.
    """
    return (
        bool(s)
        and " " not in s
        and '"' not in s
        and "=" not in s
        and (s.isprintable() or _BARE.match(s) is not None)
    )


def format_event(event: str, **fields: Any) -> str:
    """One log line for an event; fields whose value is None are left out."""
    return _file_and_terminal_lines(now_iso(), event, fields)[0]


def parse_line(line: str) -> dict[str, str] | None:
    """The fields of one log line, or None when the line is not in our format."""
    line = line.strip()
    if not line.startswith("ts="):
        return None
    out: dict[str, str] = {}
    # One pass in C over the whole line: a pair, or (group 3) a character that cannot
    # start one, which makes the line not ours. A report reads every line there is.
    for key, raw, stray in _PAIRS.findall(line):
        if stray:
            return None
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                return None
        out[key] = raw
    if "event" not in out:
        return None
    try:
        parse_ts(out["ts"])
    except ValueError:
        return None
    return out


def shorten(text: str, limit: int = BODY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _file_line(ts: str, event: str, fields: dict[str, Any]) -> str:
    """The log-file line of one event (no terminal line: the busy worker's path).

    _value inlined for str and int, most of a task's values: a call per value cost a
    tenth of the line.
    """
    parts = [f"ts={ts} event={event}"]
    append = parts.append
    for k, v in fields.items():
        t = type(v)
        if t is str:
            # _is_bare(v), inlined
            bare = v and " " not in v and '"' not in v and "=" not in v
            if bare and (v.isprintable() or _BARE.match(v)):
                append(f"{k}={v}")
            else:
                append(f"{k}={_quoted(v)}")
        elif t is int:
            append(f"{k}={v}")
        elif v is not None:
            append(f"{k}={_value(v)}")
    return " ".join(parts)


def _file_and_terminal_lines(
    ts: str, event: str, fields: dict[str, Any], terminal: Terminal | None = None
) -> tuple[str, str]:
    """The log-file line and (if `terminal`) the terminal line of one event.

    Each value is formatted once for both.
    """
    if not terminal:
        return _file_line(ts, event, fields), ""
    return _file_line(ts, event, fields), terminal.line(ts, event, fields)


class Terminal(Protocol):
    """Where a person reads events: the worker's layout (worker/terminal.py) is one."""

    def line(self, ts: str, event: str, fields: dict[str, Any]) -> str:
        """The person's form of one event ("" to show nothing for it)."""
        ...
