"""The worker's fast ack (worker/fastack.py): pika's bytes, pika's counters, pika's version.

If a pika upgrade removes an internal the fast ack needs, or is a version it was not tested
with, the self-check test below fails: the suite turns red instead of the worker silently
getting slower.
"""

from __future__ import annotations

import select

import pika
import pytest
from pika import frame, spec

from tests.helpers import queue_counts, wait_for
from utils import rabbitmq
from utils.errors import ConnectionLost
from utils.settings import Settings
from utils.task import Task
from worker import fastack
from worker.consumer import consume


@pytest.mark.parametrize(
    ("channel", "tag", "multiple"),
    [(1, 1, False), (2, 300, True), (65535, 2**40 + 7, False), (7, 2**64 - 1, True)],
)
def test_the_fast_ack_frame_equals_pikas(channel, tag, multiple):
    want = frame.Method(channel, spec.Basic.Ack(tag, multiple)).marshal()
    assert fastack.ack_frame(channel, tag, multiple) == want


def test_an_untested_pika_or_another_transport_makes_it_step_aside():
    assert "not a version the fast ack was tested with" in fastack.self_check(object(), "9.9.9")
    assert "not plain TCP" in fastack.self_check(object())


@pytest.fixture
def consumer(broker_url, queue):
    """A fast-ack consumer on a fresh queue holding three tasks, all three delivered."""
    settings = Settings(urls=(broker_url,), queue=queue)
    conn, _url = rabbitmq.connect(settings, client_name="test")
    declare = conn.channel()
    declare.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    for row in (1, 2, 3):
        task = Task.from_row(f"Task {row}", row, "fast", "t.csv")
        declare.basic_publish("", queue, task.encode(), task.properties())
    declare.close()
    c, _info = consume(conn, settings, prefetch=10, fast_ack=True)
    wait_for("3 deliveries", lambda: len(c.deliveries) >= 3 or c.pump(0.05))
    yield c
    c.close()


def test_the_fast_ack_runs_on_the_installed_pika_and_the_broker_takes_its_acks(
    consumer, broker_url, queue
):
    """The red light for a pika upgrade: the self-check must pass on the pika we ship with."""
    fast = consumer._fast
    assert fast is not None, (
        f"the fast ack stepped aside on pika {pika.__version__}: "
        f"{fastack.self_check(consumer.connection)}\n"
        "Run the worker tests, then add the version to TESTED_PIKA in worker/fastack.py "
        "and to the pika range in pyproject.toml and requirements.txt; or mend the fast ack."
    )
    impl = consumer.connection._impl
    tags = [m.delivery_tag for m, _p, _b in consumer.deliveries]
    consumer.deliveries.clear()  # taken: close() gives back only what was not
    before = (impl.bytes_sent, impl.frames_sent)
    assert fast.ack(tags[0])
    assert (impl.bytes_sent - before[0], impl.frames_sent - before[1]) == (21, 1)
    assert fast.ack(tags[2], multiple=True)  # the other two
    consumer.pump(0.2)  # the broker would close the channel on an ack it cannot read
    assert consumer._channel.is_open
    consumer.close()
    # Acked, not given back: the queue is empty once the connection has gone.
    assert wait_for("the consumer gone", lambda: queue_counts(broker_url, queue) == (0, 0))


def test_the_fast_ack_leaves_an_ack_to_pika_while_pika_has_bytes_queued(
    consumer, broker_url, queue
):
    impl = consumer.connection._impl
    impl._send_frame(frame.Heartbeat())  # queued for the I/O loop, not yet sent
    tag = consumer.deliveries.popleft()[0].delivery_tag
    assert not consumer._fast.ack(tag)  # after the heartbeat, not before it
    consumer.ack(tag)  # pika sends both, in order
    assert impl._transport.get_write_buffer_size() == 0
    consumer.close()
    assert wait_for("two back", lambda: queue_counts(broker_url, queue) == (2, 0))


def test_an_ack_on_a_channel_the_broker_closed_is_connection_lost_with_the_brokers_words(
    consumer,
):
    consumer._channel.basic_ack(99)  # no such delivery: the broker closes the channel
    # pump() says so itself, once the broker's close has come in.
    with pytest.raises(ConnectionLost, match="unknown delivery tag 99"):
        wait_for("the channel closed", lambda: consumer.pump(0.05))
    tag = consumer.deliveries.popleft()[0].delivery_tag
    assert not consumer._fast.ack(tag)
    with pytest.raises(ConnectionLost) as lost:
        consumer.ack(tag)
    assert lost.value.message.startswith("the broker closed the channel: 406")


def test_an_ack_after_a_close_pika_has_not_read_yet_is_connection_lost_as_with_basic_ack(consumer):
    """The broker's close waits in the socket, unread: the ack must see it, not go past it."""
    consumer._channel._impl.basic_ack(99)  # queued, not flushed: nothing read meanwhile
    impl = consumer.connection._impl
    impl._transport._produce()  # written; the broker answers with Channel.Close
    sock = impl._transport._sock
    wait_for("the broker's answer in the socket", lambda: select.select([sock], [], [], 0.05)[0])
    tag = consumer.deliveries.popleft()[0].delivery_tag
    with pytest.raises(ConnectionLost) as lost:
        consumer.ack(tag)
    assert lost.value.message.startswith("the broker closed the channel: 406")
