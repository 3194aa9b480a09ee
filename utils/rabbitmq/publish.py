"""Confirmed publishing on a blocking connection: a persistent copy of a message (retries,
dead letters, `tasks dead --requeue`), and the event stream's publisher.

Each publish returns only once the broker has confirmed it, so the caller may then ack
the original (or count the batch sent). emit's own windowed publishing runs on the
asynchronous connection (connect.AsyncConnection).
"""

from __future__ import annotations

from typing import Any

import pika

from utils.errors import ConnectionLost, PublishRefused, QueueMismatch
from utils.rabbitmq import internals
from utils.rabbitmq.connect import operation
from utils.rabbitmq.errors import (
    PRECONDITION_FAILED,
    Refusal,
    confirm_errors,
    lost_errors,
    queue_error,
    refused,
)
from utils.rabbitmq.queues import ensure_queue, probe_queue_type, queue_counts
from utils.task import copy_properties


def publish_copy(
    connection: Any,
    queue: str,
    body: bytes,
    properties: Any,
    headers: dict[str, Any],
    *,
    declare: bool = False,
) -> None:
    """Publish a persistent copy of a message to `queue`, and wait for the broker's confirm.

    On a confirm channel, mandatory: returns only once the copy is safe, so the caller may
    then ack the original. `declare` first makes sure the queue exists (ensure_queue).
    Raises PublishRefused when the broker nacks or returns the copy, ConnectionLost when
    the connection or channel goes.
    """
    returned = PublishRefused(
        f"the broker returned a copy sent to queue '{queue}': no such queue",
        "the queue was deleted meanwhile; run again to declare it",
    )
    nacked = PublishRefused(
        f"the broker refused (nacked) a copy sent to queue '{queue}'",
        "a queue length limit or a broker alarm refuses messages; make room, then retry",
    )
    with confirm_errors(returned, nacked):
        if declare:
            ensure_queue(connection, queue)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, copy_properties(properties, headers), mandatory=True)
        channel.close()


# -- streams: the event log on the broker (utils/eventlog/stream.py writes it, inspector/stream.py reads) --
def stream_arguments(max_age: str, max_bytes: int, segment_bytes: int) -> dict[str, Any]:
    """The arguments we declare a new stream with: bounded by age and by size."""
    return {
        "x-queue-type": "stream",
        "x-max-age": max_age,
        "x-max-length-bytes": max_bytes,
        # Retention drops whole segments: smaller ones keep the stream nearer its bound.
        "x-stream-max-segment-size-bytes": segment_bytes,
    }


@operation
def stream_exists(connection: Any, name: str) -> bool:
    """True when a queue of this name exists (of any type); creates nothing."""
    return queue_counts(connection, name) is not None


@operation
def declare_stream(connection: Any, name: str, arguments: dict[str, Any]) -> str:
    """Make sure the stream `name` exists: create it with `arguments`, or use it as it is.

    Returns "created" or "found". Raises QueueMismatch when a queue of that name exists but
    is not a stream (it could not keep a replayable history).
    """
    if stream_exists(connection, name):
        found = probe_queue_type(connection, name)
        if found not in ("stream", "unknown"):
            raise QueueMismatch(
                f"queue '{name}' exists as a {found} queue, not a stream: it cannot keep "
                "the event history",
                f"delete it ('scripts/broker ctl delete_queue {name}'), or run with --no-events",
            )
        return "found"
    channel = connection.channel()
    got = refused(lambda: channel.queue_declare(name, durable=True, arguments=arguments))
    if isinstance(got, Refusal):
        if got.reply_code == PRECONDITION_FAILED:  # another process created it meanwhile
            return "found"
        raise queue_error(got, name)
    channel.close()
    return "created"


def login_user(connection: Any) -> str | None:
    """The user a connection logged in as (its URL's user), the user_id the broker accepts
    on what it publishes; None for a certificate (EXTERNAL) login, whose name the broker
    derives from the certificate and does not tell the client."""
    credentials = getattr(getattr(connection, "params", None), "credentials", None)
    name = getattr(credentials, "username", None)
    return name if isinstance(name, str) else None


class StreamPublisher:
    """A confirm-mode channel that publishes whole messages to one stream.

    publish() returns once the broker has confirmed the message (so it is written, and on a
    cluster replicated): call it from a thread of its own, never on a task's path.
    """

    def __init__(self, connection: Any, name: str) -> None:
        self.connection = connection
        self.name = name
        #: Every message carries the connection's login as its user_id, which the broker
        #: checks: no one can publish under another user's name (docs/REPORT.md).
        self.user_id = login_user(connection)
        with lost_errors():
            self._channel = connection.channel()
            self._channel.confirm_delivery()

    def publish(
        self,
        body: bytes,
        message_id: str,
        kind: str,
        headers: dict[str, Any],
        within: float | None = None,
    ) -> None:
        """Publish one message and wait for its confirm, up to `within` seconds (default
        internals.ANSWER_WITHIN; then ConnectionLost); PublishRefused when nacked."""
        props = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="text/plain",
            content_encoding="utf-8",
            message_id=message_id,
            type=kind,
            headers=headers,
            user_id=self.user_id,
        )
        returned = PublishRefused(
            f"the broker returned an event batch sent to '{self.name}': no such stream",
            "it was deleted meanwhile; it is declared again on the next connection",
        )
        nacked = PublishRefused(f"the broker refused (nacked) an event batch sent to '{self.name}'")
        with (
            confirm_errors(returned, nacked),
            internals.answer_within(self.connection, f"a publish to stream '{self.name}'", within),
        ):
            self._channel.basic_publish("", self.name, body, props, mandatory=True)

    def pump(self, seconds: float) -> None:
        """Process broker events (heartbeats) for up to `seconds`."""
        with lost_errors():
            self.connection.process_data_events(time_limit=seconds)
        if not self._channel.is_open:
            raise ConnectionLost("the broker closed the event stream's channel")
