"""The log line format: written by every command, read back by tasks report."""

from __future__ import annotations

import pytest

from utils.logformat import format_event, parse_line


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
