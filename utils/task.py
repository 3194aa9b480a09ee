"""A task as it travels: one CSV row, with the wire format owned in one place."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pika

#: Headers we set on every message; the worker reads them back.
H_FILE = "source-file"
H_ROW = "source-row"
H_RUN = "run-id"
H_ATTEMPT = "x-attempt"  # our own count of attempts, for classic queues
H_REASON = "x-failure-reason"
H_DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues on redelivery
#: Set by RabbitMQ 4.3's quorum queues on redelivery: every return counts here (a nack, a
#: consumer_timeout), where x-delivery-count counts only failed deliveries (docs/DESIGN.md).
H_ACQUIRED_COUNT = "x-acquired-count"
#: The broker's counts of a message's earlier deliveries, per message: a copy starts afresh.
BROKER_COUNTS = (H_DELIVERY_COUNT, H_ACQUIRED_COUNT)


class DecodeError(ValueError):
    """A message body we cannot read as a task."""


def new_run_id() -> str:
    """A run id that sorts by time and is unique enough: 20261126T235900-ab12."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def task_id(run_id: str, row: int) -> str:
    return f"{run_id}-{row}"


def untracked_id(body: bytes) -> str:
    """A made-up id for a message with no message_id (another tool published it).

    `untracked-<hash of the body>-<random>`: two messages with the same body (two "Hello
    World!" from the tutorial's new_task.py) are two tasks, so each delivery gets an id of
    its own. Nothing in such a message tells a redelivery from a second message with the
    same body; the hash lets a reader group them.
    """
    return f"untracked-{hashlib.sha1(body).hexdigest()[:12]}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work: its body text plus where it came from."""

    body: str
    task_id: str
    row: int | None = None
    run_id: str | None = None
    source: str | None = None
    attempt: int = 1

    @property
    def dots(self) -> int:
        return self.body.count(".")

    def ids(self) -> dict[str, Any]:
        """The task, row and run fields that every log event about this task carries."""
        return {"task": self.task_id, "row": self.row, "run": self.run_id}

    @classmethod
    def from_row(cls, body: str, row: int, run_id: str, source: str) -> Task:
        return cls(body, task_id(run_id, row), row, run_id, source)

    def properties(self, timestamp: int | None = None) -> pika.BasicProperties:
        """Persistent, text/plain, with the message id and our headers."""
        headers: dict[str, Any] = {H_RUN: self.run_id, H_ROW: self.row}
        if self.source is not None:
            headers[H_FILE] = self.source
        if self.attempt > 1:
            headers[H_ATTEMPT] = self.attempt
        return pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="text/plain",
            content_encoding="utf-8",
            message_id=self.task_id,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            headers=headers,
        )

    def encode(self) -> bytes:
        return self.body.encode("utf-8")

    @classmethod
    def decode(cls, properties: pika.BasicProperties, body: bytes) -> Task:
        """Read a delivered message; messages from other producers get a made-up id."""
        headers = properties.headers or {}
        row = headers.get(H_ROW)
        run = headers.get(H_RUN)
        tid = properties.message_id or untracked_id(body)
        attempt = _attempt(headers)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"body is not valid UTF-8 (byte {exc.start})") from None
        if "\x00" in text:
            raise DecodeError("body contains a NUL byte")
        return cls(
            text,
            str(tid),
            int(row) if isinstance(row, int) else None,
            _text(run),
            _text(headers.get(H_FILE)),
            attempt,
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _attempt(headers: dict[str, Any]) -> int:
    """Attempt number: our own x-attempt (1 when absent), plus the deliveries of this very
    message that came back without an ack, as the broker counts them.

    Every version's quorum queue counts those (tests/fixtures/redeliveries.json): 3.10 and
    4.0 in x-delivery-count; 4.3 in x-acquired-count, which also counts the returns that
    its x-delivery-count leaves out (a nack, a consumer_timeout). Our copies (a classic
    queue's retry, and later a delayed retry) carry x-attempt and start the broker's count
    afresh, so the sum survives them. Classic queues count nothing.
    """
    ours = headers.get(H_ATTEMPT)
    n = ours if isinstance(ours, int) and ours > 0 else 1
    return n + broker_count(headers)


def broker_count(headers: dict[str, Any]) -> int:
    """How often the broker says this message came back without an ack (0: never, or a
    queue that does not count)."""
    counts = [v for v in (headers.get(h) for h in BROKER_COUNTS) if isinstance(v, int)]
    return max(counts) if counts else 0


#: What RabbitMQ's x-death reasons mean, for a person.
_DEATHS = {
    "delivery_limit": "delivered more often than its queue's delivery limit allows "
    "(each time rejected, or its consumer lost)",
    "rejected": "a consumer rejected it without requeueing",
    "expired": "its time to live ran out",
    "maxlen": "its queue was full",
}


def failure_reason(headers: dict[str, Any]) -> str:
    """Why a dead letter is dead: our x-failure-reason, else what the broker put in x-death."""
    ours = headers.get(H_REASON)
    if ours is not None:
        return _text(ours) or ""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        why, queue = _text(deaths[0].get("reason")) or "?", _text(deaths[0].get("queue"))
        return f"the broker dead-lettered it from {queue}: {why}, {_DEATHS.get(why, 'its reason')}"
    return "?"


def delivery_ids(properties: pika.BasicProperties, body: bytes) -> tuple[str, Any, Any]:
    """Message id, row and run of any message, even one whose body cannot be decoded."""
    headers = properties.headers or {}
    tid = properties.message_id or untracked_id(body)
    return str(tid), headers.get(H_ROW), _text(headers.get(H_RUN))


#: Headers about one trip through the work queue; a requeued dead letter starts afresh.
ATTEMPT_HEADERS = (H_ATTEMPT, H_REASON, *BROKER_COUNTS)


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """Persistent properties for a copy of a delivered message, with the given headers."""
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        headers=headers,
    )
