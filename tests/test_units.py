"""Pure functions: no broker."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from emitter.source import CsvOptions, ReadStats, iter_rows
from inspector.schedule import greedy, lower_bound, lpt, round_robin
from utils import logformat
from utils.errors import BadInput
from utils.logformat import format_event, parse_line
from utils.settings import check_url, mask_url, split_urls


def rows(text: str, **kw) -> list[tuple[int, str]]:
    stats = ReadStats()
    return [(r.row, r.body) for r in iter_rows(io.StringIO(text), "f.csv", CsvOptions(**kw), stats)]


def test_log_lines_round_trip_with_awkward_values():
    line = format_event("started", task="r-1", body='say "hi" = x', empty="", n=3, flag=True)
    got = parse_line(line)
    assert got is not None
    assert got["event"] == "started" and got["body"] == 'say "hi" = x'
    assert got["empty"] == "" and got["n"] == "3" and got["flag"] == "true"


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
#: Not printable, yet bare (control characters that are not whitespace), and whitespace
#: that is not ASCII: the regex decides these.
AWKWARD_VALUES += ["\x01x", "\x7f", "a\u200bb", "a\xa0b", "a\u2028b", "\u3000", "é\x1cx"]


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
        bare = text and not any(c.isspace() or c in '"=' for c in text)
        want = text if bare else json.dumps(text, ensure_ascii=False)
    assert logformat._value(value) == want
    assert logformat._file_line("T", "e", {"k": value}) == f"ts=T event=e k={want}"


@pytest.mark.parametrize(
    "line", ["garbage", "ts=notatime event=x", 'ts=2026-01-01T00:00:00Z event="x']
)
def test_garbled_log_lines_are_rejected_not_crashed_on(line):
    assert parse_line(line) is None


def test_greedy_schedule_gives_each_task_to_the_first_free_worker():
    s = greedy([3, 1, 1, 1, 2], 2)
    assert s.assignment == (0, 1, 1, 1, 0)
    assert s.makespan == 5
    assert lower_bound([3, 1, 1, 1, 2], 2) == 4
    assert lpt([1, 1, 3], 2).makespan == 3


def test_fair_dispatch_beats_round_robin_on_the_sample_tasks():
    from tests.helpers import ROOT

    dots = [line.count(".") for line in (ROOT / "tasks.csv").read_text().splitlines()]
    assert 18 <= len(dots) <= 22 and min(dots) == 1 and max(dots) == 10
    assert greedy(dots, 3).makespan < round_robin(dots, 3) * 0.8


def test_passwords_are_masked_in_urls():
    assert mask_url("amqp://bob:pw@host:5672/%2F") == "amqp://bob:***@host:5672/%2F"
    assert mask_url("amqp://host/") == "amqp://host/"


def test_urls_split_on_commas_and_are_checked():
    assert split_urls(("amqp://a/,amqp://b/",)) == ("amqp://a/", "amqp://b/")
    with pytest.raises(ValueError, match="not an AMQP URL"):
        check_url("http://x/")


def test_rows_join_fields_with_a_space_and_skip_blank_lines():
    assert rows("a,b\n\nc\n") == [(1, "a b"), (2, "c")]


def test_header_and_column_pick_one_field():
    assert rows("id,body\n1,x.\n2,y..\n", header=True, column="body") == [(1, "x."), (2, "y..")]
    assert rows("1,x.\n2,y..\n", column="2") == [(1, "x."), (2, "y..")]


def test_a_slice_keeps_original_row_numbers():
    assert rows("a\nb\nc\nd\n", start_row=2, limit=2) == [(2, "b"), (3, "c")]


@pytest.mark.parametrize(
    ("text", "kw", "msg"),
    [
        ('a\n"b\n', {}, "f.csv:2: a quote is opened and never closed"),
        ("a\nb\x00c\n", {}, "f.csv:2: a NUL byte"),
        ("a,b\nc\n", {"column": "2"}, "f.csv:2: has 1 field(s), no column 2"),
        ("a\n \n,\n", {}, "f.csv:3: the task body is empty"),
    ],
)
def test_bad_rows_name_file_and_line(text, kw, msg):
    with pytest.raises(BadInput) as err:
        rows(text, **kw)
    assert msg in err.value.message
