"""The worker's consumer of the work queue: acks (fast where it can), a wake-up timer, and
cancelling, closing or dropping it with what it holds given back to the broker."""

from __future__ import annotations

import contextlib
import logging

import pika
from pika.adapters.blocking_connection import BlockingChannel

from utils import broker
from utils.errors import ConnectionLost, QueueNotFound
from utils.settings import Settings
from worker.fastack import open_fast_ack

log = logging.getLogger(__name__)


class Consumer(broker.Consuming):
    """The work queue's consumer: the caller takes deliveries one at a time and settles each
    with ack, nack or reject."""

    def __init__(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel | None,
        queue: str,
        fast_ack: bool = False,
    ) -> None:
        super().__init__(connection, queue, channel)
        self._dropped = False
        #: Acks written to the socket directly (worker/fastack.py), or None: basic_ack only.
        self._fast = open_fast_ack(connection, self._channel) if fast_ack else None

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
        if not (self.connection.is_open and self._channel.is_open):
            raise self._lost_error()  # pika asserts on cancelling a consumer of a closed channel
        with self.errors():
            with broker.answer_within(self.connection, "basic.cancel"):
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
    connection: pika.BlockingConnection,
    settings: Settings,
    *,
    prefetch: int,
    fast_ack: bool = False,
    known: broker.QueueInfo | None = None,
) -> tuple[Consumer, broker.QueueInfo]:
    """Declare the work queue (broker.declare_queue) and consume it with this prefetch.

    `fast_ack`: write acks to the socket directly where it can (worker/fastack.py).
    `known`: what an earlier connection found of the queue. A reconnect consumes at once,
    with no declarations: after a quorum queue's leader is lost, a RabbitMQ 4 node may
    leave a queue.declare on it unanswered for minutes while the queue itself works again
    (docs/RELIABILITY.md). A queue deleted meanwhile (404) is declared as at first.
    """
    if known is not None:
        consumer = Consumer(connection, None, settings.queue, fast_ack)
        try:
            consumer.start(prefetch)
            return consumer, known
        except QueueNotFound:
            pass  # that channel is closed; declare_queue opens its own
    channel, info = broker.declare_queue(connection, settings)
    consumer = Consumer(connection, channel, settings.queue, fast_ack)
    consumer.start(prefetch)
    return consumer, info
