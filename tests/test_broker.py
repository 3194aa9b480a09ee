"""utils/broker.py against the real broker: it raises only our errors, and copies are confirmed."""

from __future__ import annotations

import pika
import pytest

from tests.helpers import drain, queue_counts
from utils import broker
from utils.errors import ConnectionLost, PublishRefused
from utils.settings import Settings
from utils.task import Task


@pytest.fixture
def conn(broker_url):
    c, _url = broker.connect(Settings(urls=(broker_url,)), client_name="test")
    yield c
    c.close()


def test_backoff_doubles_up_to_its_cap_with_jitter_and_starts_again_after_reset():
    b = broker.Backoff(0.5, 5.0)
    for delay in (0.5, 1.0, 2.0, 4.0, 5.0, 5.0):
        assert delay / 2 <= b.next() <= delay
    b.reset()
    assert 0.25 <= b.next() <= 0.5


def test_the_dead_letter_queue_of_a_queue_is_named_after_it():
    assert broker.dead_letter_name("task_queue") == "task_queue.dead"


def test_a_copy_to_a_missing_queue_is_refused_not_dropped(conn, queue):
    task = Task("hello.", "r-1", 1, "r")
    with pytest.raises(PublishRefused, match=f"queue '{queue}'"):
        broker.publish_copy(conn, queue, task.encode(), task.properties(), {"x-attempt": 2})


def test_a_copy_declares_its_queue_if_asked_and_is_persistent_with_the_new_headers(
    conn, broker_url, queue
):
    dead = broker.dead_letter_name(queue)
    task = Task("hello.", "r-1", 1, "r")
    headers = {"x-failure-reason": "boom"}
    broker.publish_copy(conn, dead, task.encode(), task.properties(), headers, declare=True)
    [(_m, props, body)] = drain(broker_url, dead)
    assert body == b"hello." and props.message_id == "r-1" and props.delivery_mode == 2
    assert props.headers == headers


def test_a_channel_the_broker_closes_under_a_consumer_is_connection_lost_with_its_code(conn, queue):
    consumer, info = broker.consume(conn, Settings(queue=queue), prefetch=1)
    assert info.created
    consumer.ack(99)  # no such delivery: the broker closes the channel
    with pytest.raises(ConnectionLost) as lost:
        for _ in range(50):
            consumer.pump(0.1)
    assert lost.value.reply_code == broker.PRECONDITION_FAILED
    assert lost.value.message.startswith("the broker closed the channel: 406")
    consumer.close()  # on a lost channel too, closing never raises


def test_a_queue_deleted_under_a_consumer_is_connection_lost(conn, broker_url, queue):
    consumer, _info = broker.consume(conn, Settings(queue=queue), prefetch=1)
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    other.channel().queue_delete(queue)
    other.close()
    with pytest.raises(ConnectionLost, match="cancelled our consumer"):
        for _ in range(50):
            consumer.pump(0.1)


def test_queue_operations_on_a_closed_connection_raise_connection_lost(conn, queue):
    conn.close()
    conn.close()  # a second close is a no-op, not pika's ConnectionWrongStateError
    with pytest.raises(ConnectionLost):
        broker.queue_counts(conn, queue)
    with pytest.raises(ConnectionLost):
        broker.publish_copy(conn, queue, b"x", Task("x", "t").properties(), {})


def test_tasks_taken_unacked_go_back_when_given_back(conn, broker_url, queue):
    for body in ("a", "b"):
        task = Task(body, f"t-{body}")
        broker.publish_copy(conn, queue, task.encode(), task.properties(), {}, declare=True)
    channel = broker.open_channel(conn)
    got = [channel.get(queue), channel.get(queue), channel.get(queue)]
    assert [d[2] for d in got if d] == [b"a", b"b"] and got[2] is None
    channel.give_back_all()
    assert queue_counts(broker_url, queue) == (2, 0)
