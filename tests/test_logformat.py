"""The log line format: written by every command, read back by tasks report."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from utils.eventlog import format as logformat
from utils.eventlog.format import format_event, parse_line, read_int


def test_log_lines_round_trip_with_awkward_values():
    line = format_event("started", task="r-1", body='say "hi" = x', empty="", n=3, flag=True)
    got = parse_line(line)
    assert got is not None
    assert got["event"] == "started" and got["body"] == 'say "hi" = x'
    assert got["empty"] == "" and got["n"] == "3" and got["flag"] == "true"


@pytest.mark.parametrize(
    "line", ["garbage", "ts=notatime event=x", 'ts=2026-01-01T00:00:00Z event="x']
)
def test_garbled_log_lines_are_rejected_not_crashed_on(line):
    assert parse_line(line) is None


def test_time_stamps_are_utc_to_the_millisecond_across_second_boundaries(monkeypatch):
    # now_iso keeps the formatted second between calls: stamps on both sides of a second
    # (and of a day) must read as datetime would write them.
    instants = [
        1_800_000_000_999_999_999,
        1_800_000_001_000_000_000,
        1_800_000_001_000_999_999,
        1_800_000_001_123_456_789,
        1_800_057_599_999_000_000,
        1_800_057_600_001_000_000,
        1_800_000_000_500_000_000,  # the clock stepped back
    ]
    for ns in instants:
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        want = datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc)
        want_text = want.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert logformat.now_iso() == want_text


#: Log values of every kind _value takes a fast path for, and of the kinds it does not.
AWKWARD_VALUES = [True, False, 0, -3, 1.5, float("nan"), "", "a b", 'x"y', "é ü", "ok\n", "a\tb"]
AWKWARD_VALUES += ["\x00", Path("/a b"), b"x y", ("a", 1), "Task 1", "t=1", "run-7"]
#: Not printable: control characters that are not whitespace (quoted, never raw: issue 23),
#: a zero-width space (bare), and whitespace that is not ASCII: the regex decides these.
AWKWARD_VALUES += ["\x01x", "\x7f", "a\u200bb", "a\xa0b", "a\u2028b", "\u3000", "é\x1cx"]
#: What acts on a terminal: written quoted, as \\u escapes (issue 23).
AWKWARD_VALUES += ["\x1b]0;t\x07", "\x1b[2J", "a\u202eb", "\x9b31m", "x\u2066y"]
#: The characters no log line carries raw (utils/text.py's safe() shows the same escaped).
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize("value", AWKWARD_VALUES)
def test_log_values_are_bare_or_json_strings_as_before(value):
    # The fast paths in _value (exact types, encode_basestring) write what the plain rule
    # says: bool and float by their own forms, else str(value), quoted as JSON if it must be.
    if isinstance(value, bool):
        want = "true" if value else "false"
    elif isinstance(value, float):
        want = f"{value:.3f}"
    else:
        text = str(value)
        bare = text and not any(c.isspace() or c in '"=' for c in text) and not RAW.search(text)
        want = text if bare else json.dumps(text, ensure_ascii=False)
        want = RAW.sub(lambda m: f"\\u{ord(m[0]):04x}", want)
    assert logformat._value(value) == want
    line = logformat._file_line("T", "e", {"k": value})
    assert line == f"ts=T event=e k={want}"
    assert not RAW.search(line)
    if not isinstance(value, (bool, float)):
        assert logformat.parse_line(f"ts=2026-01-01T00:00:00.000Z event=e k={want}")["k"] == str(
            value
        )


def test_read_int_takes_bounded_decimal_numbers_and_refuses_the_rest_without_raising():
    assert read_int("42", 100) == 42 and read_int("-42", 100) == -42
    assert read_int("101", 100) is None and read_int("-101", 100) is None
    for bad in (None, "", "-", "²", "1.5", "1e3", "inf", " 1", "9" * 5000):
        assert read_int(bad, 10**12) is None, bad
