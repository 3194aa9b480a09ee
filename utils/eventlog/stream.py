"""The event stream: every event `work` and `emit` log also goes to `<queue>.events` on the broker.

The stream is a RabbitMQ stream queue (`x-queue-type: stream`): a durable, replayable log
with bounded retention, so `tasks report --source broker` can tell who did what from any
machine, after the fact. Local log files are written exactly as before; the stream gets
the very same lines (format.py), so a reader parses them with parse_line.

Never at the task's expense:
- the worker only appends each written chunk of lines to an in-memory buffer (EventLog's
  `sink`); a thread of its own, on a connection of its own, sends the buffer in batches
  (one stream message carries many lines) with publisher confirms;
- a batch goes out at least every TICK, and within MIN_GAP of an event written at once
  (a task that takes time has started, a failure, a stop), so that a worker killed
  mid-task has its `started` on the broker as it has it in its log;
- a batch not confirmed when the connection drops is sent again, under the same message
  id, after the reconnect: readers keep the first copy of each id (at-least-once, no
  double count);
- the buffer is bounded (BUFFER_CHARS). When it is full, new events are not buffered:
  they stay in the local log only, and at exit an `events_dropped` event (log, and
  stream if it can still be sent) says how many. Blocking instead would put the task
  at the mercy of the stream.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

from utils import rabbitmq
from utils.errors import (
    AccessRefused,
    ConnectionLost,
    PublishRefused,
    QueueMismatch,
    TaskToolError,
)
from utils.eventlog.log import EventLog
from utils.eventlog.schema import EVENTS_DROPPED, EVENTS_OFF, EVENTS_UNSENT
from utils.settings import Settings

log = logging.getLogger(__name__)

#: The stream of a work queue.
SUFFIX = ".events"
#: The `type` property of a batch of event lines, and of a reader's end marker.
KIND_EVENTS = "events"
KIND_MARK = "mark"
#: A batch is sent at least this often while events come (seconds) ...
TICK = 0.2
#: ... and no sooner than this after the previous one, however urgent (seconds).
MIN_GAP = 0.02
#: Characters of event lines held in memory, sent or not yet confirmed (about 300,000 events).
BUFFER_CHARS = 64 * 1024 * 1024
#: Characters of event lines in one stream message, at most.
BATCH_CHARS = 1024 * 1024
#: How long a command waits at exit for its last events to be confirmed (seconds).
CLOSE_WAIT = 5.0
#: Reconnect back-off of the event connection: first delay and cap (seconds).
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0

#: The broker's reply code when a user may not write to the stream.
ACCESS_REFUSED = 403

DEFAULT_MAX_AGE = "7D"
DEFAULT_MAX_BYTES = 1_000_000_000

_AGE = re.compile(r"^[1-9]\d*(Y|M|D|h|m|s)$")
_SIZE = re.compile(r"^(\d+)\s*([kmgt]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def stream_name(queue: str) -> str:
    """The event stream of a work queue: `<queue>.events`."""
    return queue + SUFFIX


def check_max_age(text: str) -> str:
    """RabbitMQ's x-max-age form (7D, 12h, 30m, 1Y ...), or ValueError saying what is wrong."""
    if not _AGE.match(text):
        raise ValueError(
            f"'{text}' is not an age: a number and a unit, Y, M, D, h, m or s (e.g. 7D, 12h)"
        )
    return text


def parse_size(text: str) -> int:
    """Bytes from '1GB', '500MB', '250k' or '1000000' (k, M, G, T are powers of 1000)."""
    m = _SIZE.match(text.strip())
    if not m or int(m[1]) == 0:
        raise ValueError(f"'{text}' is not a size: a number of bytes, or one with KB, MB or GB")
    return int(m[1]) * _UNITS[m[2].lower()]


@dataclass(frozen=True)
class EventsConfig:
    """Whether events go to the stream, and the retention of a stream we create."""

    enabled: bool = True
    max_age: str = DEFAULT_MAX_AGE
    max_bytes: int = DEFAULT_MAX_BYTES

    def arguments(self) -> dict[str, object]:
        """The stream's declaration arguments: bounded by age and size."""
        segment = max(1_000_000, min(100_000_000, self.max_bytes // 10))
        return rabbitmq.stream_arguments(self.max_age, self.max_bytes, segment)


@dataclass
class _Batch:
    message_id: str
    body: bytes
    lines: int
    chars: int


class EventStream:
    """Sends the lines an EventLog writes to the stream, from a thread of its own.

    attach() makes it the log's sink and starts the thread; close() sends what is left
    (waiting up to CLOSE_WAIT) and logs, in the local log, anything it could not send.
    """

    def __init__(
        self,
        settings: Settings,
        config: EventsConfig,
        source: str,
        *,
        buffer_chars: int = BUFFER_CHARS,
    ) -> None:
        self.settings = settings
        self.config = config
        self.source = source
        self.name = stream_name(settings.queue)
        self.buffer_chars = buffer_chars
        # Batch ids: unique per process, so that a republished batch is known for a copy.
        host = socket.gethostname()
        self._prefix = f"{source}.{host}.{os.getpid()}.{secrets.token_hex(3)}"
        self._seq = 0
        self._chunks: deque[str] = deque()
        # Each counter is written by one thread only (no lock on the task's path).
        self._added = 0  # characters buffered, by the writer
        self._done = 0  # characters confirmed (or given up), by the sender thread
        self._dropped = 0  # events not buffered because the buffer was full, by the writer
        self._dropped_told = 0
        self._wake = threading.Event()  # send soon: an urgent line, or close()
        self._closed = threading.Event()  # ends a back-off wait: close()
        self._closing = False
        self._unconfirmed: deque[_Batch] = deque()
        self._thread: threading.Thread | None = None
        self._connected = False  # the sender thread connected at least once
        self._log: EventLog | None = None
        #: Why the stream is not used (access refused, not a stream), once known.
        self.off_reason = ""
        #: Figures for the summary and the tests: batches and lines confirmed, reconnects.
        self.sent_batches = 0
        self.sent_lines = 0
        self.reconnects = 0

    # -- the writer's side (the worker's or emitter's main thread) ---------------------------
    def attach(self, event_log: EventLog) -> EventStream:
        """Become the log's sink; sending starts with the first line (a command that fails
        before it logs anything, on bad input say, does not even create the stream)."""
        self._log = event_log
        event_log.sink = self.add
        return self

    def add(self, text: str, urgent: bool) -> None:
        """Buffer one write of the log (one or more lines); `urgent` sends it soon."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)
            self._thread.start()
        if self.off_reason:
            return
        if self._added - self._done + len(text) > self.buffer_chars:
            self._dropped += text.count("\n") + 1
            return
        self._chunks.append(text)
        self._added += len(text)
        if urgent:
            self._wake.set()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Send what is left, waiting up to `wait` seconds; log what could not be sent."""
        event_log = self._log
        if event_log is None or self._thread is None:
            return
        if self._dropped > self._dropped_told:
            self._tell_dropped(event_log)
        self._closing = True
        self._wake.set()
        self._closed.set()
        self._thread.join(wait)
        event_log.sink = None
        unsent = self._unsent_lines()
        if self.off_reason:
            event_log.event(
                EVENTS_OFF,
                stream=self.name,
                reason=self.off_reason,
                note="events were not sent to the broker; this log has them all",
            )
        elif unsent and self._connected:  # (never connected: the command failed to, too)
            event_log.event(
                EVENTS_UNSENT,
                stream=self.name,
                lines=unsent,
                note=f"{unsent} event(s) could not be sent to the broker before exit; "
                "this log has them all",
            )

    def _tell_dropped(self, event_log: EventLog) -> None:
        n = self._dropped - self._dropped_told
        self._dropped_told = self._dropped
        event_log.event(
            EVENTS_DROPPED,
            stream=self.name,
            dropped=n,
            note=f"the event buffer was full: {n} event(s) went to this log only, "
            "not to the broker",
        )

    def _unsent_lines(self) -> int:
        pending = sum(b.lines for b in self._unconfirmed)
        return pending + sum(c.count("\n") + 1 for c in list(self._chunks))

    # -- the sender thread --------------------------------------------------------------------
    def _run(self) -> None:
        backoff = rabbitmq.Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        publisher: rabbitmq.StreamPublisher | None = None
        while True:
            if publisher is None:
                if self._closing and not self._has_work():
                    return
                try:
                    publisher = self._open()
                except (AccessRefused, QueueMismatch) as exc:
                    self._give_up(exc.message)
                    return
                except TaskToolError as exc:
                    log.debug("event stream: cannot connect: %s", exc.message)
                    if self._closing:
                        return  # at exit, no second chance: close() says what is unsent
                    self._closed.wait(backoff.next())
                    continue
                if self._connected:
                    self.reconnects += 1
                self._connected = True
            try:
                self._send_unconfirmed(publisher)  # first those a lost connection left
                batch = self._take()
                if batch is not None:
                    self._unconfirmed.append(batch)
                    self._send_unconfirmed(publisher)
                backoff.reset()
                if self._closing:
                    if not self._chunks:
                        publisher.connection.close()
                        return
                    continue
                if self._chunks and batch is not None and batch.chars >= BATCH_CHARS // 2:
                    continue  # a backlog (after an outage, say): no pause between batches
                self._wake.wait(TICK)
                self._wake.clear()
                publisher.pump(0)
                if not self._closing:
                    time.sleep(MIN_GAP)  # lets a run of urgent events gather into one batch
            except (ConnectionLost, PublishRefused) as exc:
                log.debug("event stream: %s", exc.message)
                publisher.connection.close()
                publisher = None
                if getattr(exc, "reply_code", None) == ACCESS_REFUSED:
                    self._give_up(exc.message)  # may not write to it: retrying cannot help
                    return
                if self._closing:
                    continue  # one more try at once: the broker may be back
                self._closed.wait(backoff.next())

    def _has_work(self) -> bool:
        return bool(self._unconfirmed or self._chunks)

    def _open(self) -> rabbitmq.StreamPublisher:
        conn, _url = rabbitmq.connect(self.settings, client_name=f"events {self.source}")
        try:
            rabbitmq.declare_stream(conn, self.name, self.config.arguments())
            return rabbitmq.StreamPublisher(conn, self.name)
        except BaseException:
            conn.close()
            raise

    def _send_unconfirmed(self, publisher: rabbitmq.StreamPublisher) -> None:
        """Send every batch not yet confirmed, oldest first, each waiting for its confirm."""
        while self._unconfirmed:
            batch = self._unconfirmed[0]
            publisher.publish(batch.body, batch.message_id, KIND_EVENTS, {"lines": batch.lines})
            self._unconfirmed.popleft()
            self._done += batch.chars
            self.sent_batches += 1
            self.sent_lines += batch.lines

    def _take(self) -> _Batch | None:
        """The next batch from the buffer (up to BATCH_CHARS), or None when it is empty."""
        chunks = self._chunks
        parts: list[str] = []
        chars = 0
        while chunks and (not parts or chars + len(chunks[0]) <= BATCH_CHARS):
            text = chunks.popleft()
            parts.append(text)
            chars += len(text)
        if not parts:
            return None
        self._seq += 1
        body = "\n".join(parts)
        return _Batch(
            f"{self._prefix}.{self._seq}", body.encode("utf-8"), body.count("\n") + 1, chars
        )

    def _give_up(self, reason: str) -> None:
        self.off_reason = reason
        self._chunks.clear()
        self._unconfirmed.clear()
        log.warning(
            "events: not sending events to the stream %s: %s (the local log has them all)",
            self.name,
            reason,
        )


def open_event_stream(
    settings: Settings, config: EventsConfig, source: str, event_log: EventLog
) -> EventStream | None:
    """An EventStream attached to event_log, or None with events turned off (--no-events)."""
    if not config.enabled:
        return None
    return EventStream(settings, config, source).attach(event_log)
