"""Reading the event stream `<queue>.events` back: what every `work` and `emit` logged, anywhere.

Each stream message is a batch of log lines (utils/eventlog/stream.py), parsed with parse_line as
the log files are. A batch sent twice (its confirm was lost with a connection) carries
the same message id both times: only the first copy counts.

Where the stream ends: before reading, the reader appends a small marker message of its
own (type `mark`) and waits for its confirm; every event confirmed before the report
started is before the marker, so reading stops at it, however busy or idle the stream
is. Markers are skipped by every reader. (AMQP 0-9-1 cannot ask a stream for its last
offset, and waiting for a quiet spell would either cut a busy stream short or wait
for nothing.)
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from utils import rabbitmq
from utils.errors import BrokerUnavailable, ConnectionLost, NothingToDo
from utils.eventlog.fold import fold_events
from utils.eventlog.format import parse_line
from utils.eventlog.records import LogSet, Skipped
from utils.eventlog.stream import KIND_EVENTS, KIND_MARK, stream_name
from utils.settings import Settings

#: Stream messages the broker may send before we ack (each a batch of up to 1 MB of lines).
PREFETCH = 100
#: Acknowledge (the credit a stream consumer needs) every this many deliveries.
ACK_EVERY = 25
#: Give up when nothing at all arrives for this long before the end marker (seconds).
STALL = 60.0
#: Wait between tries of the end marker, refused while a stream has no leader (seconds).
MARK_RETRY = 1.0
#: Read from this long before a run's start, for clocks that disagree (the broker stamps
#: the stream's chunks with its own time).
CLOCK_MARGIN = timedelta(minutes=10)


@dataclass
class StreamRead:
    """What one read of the stream found: the events in order, and what was skipped."""

    name: str
    events: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    batches: int = 0
    duplicates: int = 0  # batches sent twice, counted once
    #: Event lines not counted, by the user id of their batch ('' for none): not trusted.
    set_aside: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def read_stream(settings: Settings, *, since: datetime | None = None) -> StreamRead:
    """Every event in the stream up to now (from `since` less CLOCK_MARGIN, if given)."""
    began = time.monotonic()
    out = StreamRead(stream_name(settings.queue))
    for where, n, fields, why in _lines(settings, since, follow=False, read=out):
        if fields is None:
            out.skipped.append(Skipped(where, n, why))
        else:
            out.events.append((where, n, fields))
    out.seconds = time.monotonic() - began
    return out


def read_broker(settings: Settings, *, since: datetime | None = None) -> tuple[LogSet, StreamRead]:
    """The runs the stream tells of, as read_logs() gives them from a log folder."""
    got = read_stream(settings, since=since)
    return fold_events(got.events, list(got.skipped)), got


def iter_events(
    settings: Settings, *, since: datetime | None = None, follow: bool = False
) -> Iterator[dict[str, str]]:
    """The events of the stream, oldest first, as parse_line() gives them (each once).

    follow=False stops at the end as it was when called; follow=True goes on with new
    events as they come (until the caller stops iterating). Lines that do not parse are
    left out.
    """
    for _where, _n, fields, _why in _lines(settings, since, follow=follow, read=None):
        if fields is not None:
            yield fields


def trusted_users(settings: Settings, conn: rabbitmq.Connection) -> frozenset[str]:
    """Whose events count: the user we log in as (the broker checked each batch's user_id
    against its publisher's login), and those named by --trust-user (TASK_TRUST_USERS)."""
    own = rabbitmq.login_user(conn)
    return frozenset(settings.trust_users) | ({own} if own else set())


def set_aside_notes(read: StreamRead) -> list[str]:
    """One line per publisher whose events were not counted."""
    notes = []
    for user, n in sorted(read.set_aside.items()):
        who = (
            f"from user '{safe_name(user)}'"
            if user
            else "with no user id (sent by an older version, or a foreign tool)"
        )
        notes.append(
            f"set aside {n} event{'s' if n != 1 else ''} {who} (not trusted; "
            "--trust-user to count them)"
        )
    return notes


def safe_name(text: str) -> str:
    """A name read from the broker, printable (control characters shown escaped)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:100]


def _mark_end(
    settings: Settings, conn: rabbitmq.Connection, name: str, mark: str
) -> rabbitmq.Connection:
    """Append the end marker and wait for its confirm; returns the connection to go on with.

    Its confirm waits for the stream to have a leader (one is elected after a node is
    lost), for as long as we would wait for the stream's news. Until then a cluster may
    also refuse it outright (506 "Stream coordinator unavailable" closes the channel):
    each refusal or lost connection is tried again on a new connection, once a second.
    """
    deadline = time.monotonic() + STALL
    while True:
        try:
            left = max(1.0, deadline - time.monotonic())
            rabbitmq.StreamPublisher(conn, name).publish(b"", mark, KIND_MARK, {}, left)
            return conn
        except ConnectionLost as exc:
            conn.close()
            if time.monotonic() + MARK_RETRY >= deadline:
                raise BrokerUnavailable(
                    f"could not mark the end of the stream '{name}' in {STALL:g} s: {exc.message}",
                    "the broker may be overloaded or a node down; try again",
                ) from None
            time.sleep(MARK_RETRY)
            conn, _url = rabbitmq.connect(settings, client_name="tasks report")


def _lines(
    settings: Settings, since: datetime | None, *, follow: bool, read: StreamRead | None
) -> Iterator[tuple[str, int, dict[str, str] | None, str]]:
    """(where, line number, fields or None, why not) for every line of every batch."""
    name = stream_name(settings.queue)
    conn, _url = rabbitmq.connect(settings, client_name="tasks report")
    try:
        if not rabbitmq.stream_exists(conn, name):
            raise NothingToDo(
                f"there is no event stream '{name}' on the broker",
                "work and emit create it unless run with --no-events (TASK_EVENTS=0); "
                "check --queue / TASK_QUEUE, or read the logs with --source logs",
            )
        mark = ""
        if not follow:
            mark = f"mark.{secrets.token_hex(8)}"
            conn = _mark_end(settings, conn, name, mark)
        offset: Any = "first" if since is None else since - CLOCK_MARGIN
        consumer = rabbitmq.Consuming(conn, name)
        consumer.start(PREFETCH, {"x-stream-offset": offset})
        trusted = trusted_users(settings, conn)
        seen: set[str] = set()
        taken = 0
        last_news = time.monotonic()
        while True:
            if not consumer.deliveries:
                consumer.pump(1.0)
                if not consumer.deliveries:
                    if not follow and time.monotonic() - last_news > STALL:
                        raise BrokerUnavailable(
                            f"the stream '{name}' sent nothing for {STALL:g} s before its end",
                            "the broker may be overloaded or a node down; try again",
                        )
                    continue
            last_news = time.monotonic()
            method, props, body = consumer.deliveries.popleft()
            taken += 1
            if taken % ACK_EVERY == 0:
                consumer.ack(method.delivery_tag, multiple=True)  # a stream's credit
            mid = props.message_id or ""
            if mark and mid == mark:
                return
            if props.type == KIND_MARK:
                continue
            if mid in seen:
                if read is not None:
                    read.duplicates += 1
                continue
            if mid:
                seen.add(mid)
            if read is not None:
                read.batches += 1
            offset_here = (props.headers or {}).get("x-stream-offset", "?")
            where = f"{name}@{offset_here}"
            if (props.user_id or "") not in trusted:
                if read is not None:
                    lines = body.count(b"\n") + 1 if body.strip() else 0
                    read.set_aside[props.user_id or ""] += lines
                continue
            if props.type not in (None, KIND_EVENTS):
                yield where, 0, None, f"not an event batch (type {props.type})"
                continue
            text = body.decode("utf-8", "replace")
            for n, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                fields = parse_line(line)
                why = "" if fields is not None else "not a log line in our format"
                yield where, n, fields, why
    finally:
        conn.close()
