"""The worker's consumer of the work queue: acks (fast where it can), a wake-up timer, and
cancelling, closing or dropping it with what it holds given back to the broker."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from utils import rabbitmq
from utils.errors import ConnectionLost, QueueNotFound
from utils.settings import Settings
from worker.fastack import open_fast_ack

log = logging.getLogger(__name__)


class Consumer(rabbitmq.Consuming):
    """The work queue's consumer: the caller takes deliveries one at a time and settles each
    with ack, nack or reject."""

    def __init__(
        self,
        connection: rabbitmq.Connection,
        channel: Any,
        queue: str,
        fast_ack: bool = False,
    ) -> None:
        super().__init__(connection, queue, channel)
        self._dropped = False
        #: Acks written to the socket directly (worker/fastack.py), or None: basic_ack only.
        self._fast = open_fast_ack(connection, self._channel) if fast_ack else None
        #: When the task in hand began (time.monotonic()), while the worker runs one.
        self.in_hand: float | None = None
        #: The x-consumer-timeout this consumer asked for, in seconds (None: the broker's).
        self.timeout: float | None = None

    def broker_cancelled(self) -> ConnectionLost | None:
        """Tell RabbitMQ 4.3's consumer_timeout from a deleted queue, after a basic.cancel.

        4.3 signals a consumer_timeout with basic.cancel and leaves the channel open, where
        4.0 closed it; the cancel names no cause. So while a task is in hand, a queue still
        there (asked on a channel of its own) means the timeout: the task goes back to the
        queue and the channel is left for good, unsettled (settling on it can resume a
        consumer pika has dropped). Either way the worker drops the connection and consumes
        again; a deleted queue is declared again.
        """
        lost = super().broker_cancelled()
        if lost is None or self.in_hand is None:
            return lost
        if rabbitmq.queue_counts(self.connection, self.queue) is None:
            return lost
        if self.timeout:
            lost = rabbitmq.timed_out(self.timeout)
        else:
            lost = rabbitmq.timed_out(0.0, after=time.monotonic() - self.in_hand)
        return self.make_unusable(lost)

    def start_consuming(self, prefetch: int, queue_type: str) -> None:
        """Consume with this prefetch, asking for our own consumer timeout where the broker
        takes one (RabbitMQ 4.3, quorum queues): --consumer-timeout, on any queue."""
        arguments = None
        if self.timeout and rabbitmq.consumer_timeout_on_consume(
            queue_type, rabbitmq.server_version(self.connection)
        ):
            arguments = {"x-consumer-timeout": round(self.timeout * 1000)}
        else:
            self.timeout = None  # the broker's (or the queue's) applies
        self.start(prefetch, arguments)

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge one delivery (`multiple`: and every earlier one still unacked)."""
        fast = self._fast
        if fast is not None:
            with self.errors():
                if fast.ack(tag, multiple):
                    return
        super().ack(tag, multiple)

    def wake_every(self, seconds: float) -> None:
        """Make pump(None) return at least every `seconds`, for as long as the connection is open.

        With this timer in place, waiting for a delivery needs no time limit, which spares
        pika a timer per wait (a measurable share of a very short task's cost).
        """
        conn = self.connection

        def wake() -> None:
            if conn.is_open and not self._dropped:
                conn.call_later(seconds, wake)

        conn.call_later(seconds, wake)

    def cancel(self) -> None:
        """Stop the deliveries, and give back those that came but were not taken yet."""
        if self._tag is None:
            return
        tag, self._tag = self._tag, None
        if self._unusable is not None or not (self.connection.is_open and self._channel.is_open):
            raise self._lost_error()  # pika asserts on cancelling a consumer of a closed channel
        with self.errors():
            with rabbitmq.answer_within(self.connection, "basic.cancel"):
                leftovers = self._channel.basic_cancel(tag)
            for _ch, method, _props, _body in leftovers or ():
                self._channel.basic_nack(method.delivery_tag, requeue=True)
            for method, _props, _body in self.deliveries:
                self._channel.basic_nack(method.delivery_tag, requeue=True)
            self.deliveries.clear()

    def close(self) -> None:
        """Cancel the consumer and close the connection; never raises."""
        with contextlib.suppress(ConnectionLost):  # closing gives back what we hold anyway
            self.cancel()
        self.drop()

    def drop(self) -> None:
        """Close the connection without a word to the broker first (it is lost, or going)."""
        self._dropped = True
        self._tag = None
        self.deliveries.clear()  # unacked: the broker gives them back
        try:
            self.connection.close()
        except Exception as exc:  # it is going away anyway; nothing of ours is left on it
            log.debug("dropping a connection: %r", exc)


def consume(
    connection: rabbitmq.Connection,
    settings: Settings,
    *,
    prefetch: int,
    fast_ack: bool = False,
    known: rabbitmq.QueueInfo | None = None,
    url: str = "",
) -> tuple[Consumer, rabbitmq.QueueInfo]:
    """Declare the work queue (rabbitmq.declare_queue) and consume it with this prefetch.

    `fast_ack`: write acks to the socket directly where it can (worker/fastack.py).
    `url`: the AMQP URL the connection was opened with (for our policy, see declare_queue).
    `known`: what an earlier connection found of the queue. A reconnect consumes at once,
    with no declarations: after a quorum queue's leader is lost, a RabbitMQ 4 node may
    leave a queue.declare on it unanswered for minutes while the queue itself works again
    (docs/RELIABILITY.md). A queue deleted meanwhile (404) is declared as at first.
    """
    if known is not None:
        consumer = Consumer(connection, None, settings.queue, fast_ack)
        consumer.timeout = settings.consumer_timeout
        try:
            consumer.start_consuming(prefetch, known.queue_type)
            return consumer, known
        except QueueNotFound:
            pass  # that channel is closed; declare_queue opens its own
    channel, info = rabbitmq.declare_queue(connection, settings, url)
    consumer = Consumer(connection, channel, settings.queue, fast_ack)
    consumer.timeout = settings.consumer_timeout
    consumer.start_consuming(prefetch, info.queue_type)
    return consumer, info
