"""Channels whose calls raise only our errors: settling deliveries, basic.get, consuming.

The worker's consumer (worker/consumer.py) and the reader of the event stream
(inspector/stream.py) build on Consuming; `tasks dead` takes and settles dead letters on a
Channel.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Any

from utils.errors import ConnectionLost
from utils.rabbitmq import internals
from utils.rabbitmq.connect import operation
from utils.rabbitmq.errors import LOST_ERRORS, channel_lost, queue_errors

#: A delivery as pika hands it over: (method with delivery_tag and redelivered, properties, body).
Delivery = tuple[Any, Any, bytes]


class Channel:
    """A channel whose calls raise only our errors: ack, nack and reject, and basic_get."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self._channel = channel
        #: Set once this channel must not be used any more, though pika still has it open
        #: (RabbitMQ 4.3 cancelled our consumer on a consumer_timeout): every call raises it.
        self._unusable: ConnectionLost | None = None
        #: Why the broker closed it, as pika kept it (internals.closing_reason_reader).
        self._why_closed = internals.closing_reason_reader(channel)

    def _lost_error(self, exc: BaseException | None = None) -> ConnectionLost:
        """ConnectionLost for this channel, with the broker's reason when the broker closed it."""
        if self._unusable is not None:
            return self._unusable
        return channel_lost(exc, self._why_closed())

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Within it, a lost connection or channel is ConnectionLost, with the broker's reason."""
        if self._unusable is not None:
            raise self._unusable
        try:
            yield
        except LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge one delivery (`multiple`: and every earlier one still unacked)."""
        with self.errors():
            self._channel.basic_ack(tag, multiple=multiple)

    def reject(self, tag: int) -> None:
        """Give one delivery back to its queue: a failed delivery, which a quorum queue counts
        on every version (x-delivery-count; from 4.3 a nack counts only as a return)."""
        with self.errors():
            self._channel.basic_reject(tag, requeue=True)

    def give_back_all(self) -> None:
        """Give every delivery this channel holds unacked back to its queue."""
        with self.errors():
            self._channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)

    def get(self, queue: str) -> Delivery | None:
        """Take one message from `queue`, unacked (basic_get); None when it is empty."""
        with self.errors():
            method, properties, body = self._channel.basic_get(queue, auto_ack=False)
        return None if method is None else (method, properties, body)


@operation
def open_channel(connection: Any) -> Channel:
    """A new channel on the connection."""
    return Channel(connection, connection.channel())


class Consuming(Channel):
    """A channel consuming one queue or stream: `deliveries` are buffered for the caller.

    pump() runs pika's I/O (heartbeats included) and fills `deliveries`; the caller takes
    them one at a time.
    """

    def __init__(self, connection: Any, queue: str, channel: Any = None) -> None:
        with queue_errors(queue):
            super().__init__(connection, channel or connection.channel())
        self.queue = queue
        self.deliveries: deque[Delivery] = deque()
        self._tag: str | None = None
        self._cancelled_by_broker = False

    def start(self, prefetch: int, arguments: dict[str, Any] | None = None) -> None:
        """Consume the queue with this prefetch (and consumer `arguments`)."""
        with queue_errors(self.queue), internals.answer_within(self.connection, "basic.consume"):
            # A stream refuses a consumer without a prefetch.
            self._channel.basic_qos(prefetch_count=prefetch)
            self._tag = self._channel.basic_consume(
                self.queue, self._on_delivery, arguments=arguments
            )
        # The broker cancels our consumer when the queue is deleted (or its node is
        # lost); without this we would wait for deliveries that can never come.
        self._channel.add_on_cancel_callback(self._on_broker_cancel)

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.deliveries.append((method, properties, body))

    def _on_broker_cancel(self, frame: Any) -> None:
        self._cancelled_by_broker = True

    def pump(self, seconds: float | None = None) -> None:
        """Process broker events: for up to `seconds`, or (None) until the next event.

        Raises ConnectionLost when the connection or channel is gone (the broker has taken
        back what it delivered on it, so the deliveries not yet taken cannot be acked
        either), or when the broker cancelled our consumer (see broker_cancelled).
        """
        with self.errors():
            self.connection.process_data_events(time_limit=seconds)
        # pika's process_data_events() does not raise for a channel the broker closed (a
        # consumer_timeout, say): a task still running learns of it here, within a pump.
        if not self._channel.is_open:
            raise self._lost_error()
        if self._cancelled_by_broker:
            lost = self.broker_cancelled()
            if lost is not None:
                raise lost

    def broker_cancelled(self) -> ConnectionLost | None:
        """What the broker's basic.cancel of our consumer means: the error to raise, or None
        while deliveries already here (which can still be acked) wait to be taken.

        basic.cancel carries no cause. A queue deleted, or (before RabbitMQ 4) lost with its
        node, cancels consumers; the worker's consumer tells a consumer_timeout apart.
        """
        if self.deliveries:
            return None
        return ConnectionLost(
            "the broker cancelled our consumer: the queue was deleted, or the node "
            "holding it went away; declaring it again"
        )

    def make_unusable(self, why: ConnectionLost) -> ConnectionLost:
        """From now on every call on this channel raises `why` (returned, to raise now)."""
        self._unusable = why
        return why
