"""utils/rabbitmq against the real broker: it raises only our errors, and copies are confirmed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pika
import pytest

from tests.helpers import (
    Relay,
    declare_like_the_tutorial,
    drain,
    our_connection,
    queue_counts,
    task_policy_of,
)
from utils import rabbitmq
from utils.errors import ConnectionLost, PublishRefused
from utils.rabbitmq import internals
from utils.rabbitmq.errors import PRECONDITION_FAILED, consumer_timeout_of, plain_reason
from utils.rabbitmq.queues import dead_letter_settings, queue_arguments
from utils.settings import Settings
from utils.task import Task
from worker.consumer import Consumer, consume


@pytest.fixture
def conn(broker_url):
    with our_connection(broker_url) as c:
        yield c


def test_backoff_doubles_up_to_its_cap_with_jitter_and_starts_again_after_reset():
    b = rabbitmq.Backoff(0.5, 5.0)
    for delay in (0.5, 1.0, 2.0, 4.0, 5.0, 5.0):
        assert delay / 2 <= b.next() <= delay
    b.reset()
    assert 0.25 <= b.next() <= 0.5


def test_the_dead_letter_queue_of_a_queue_is_named_after_it():
    assert rabbitmq.dead_letter_name("task_queue") == "task_queue.dead"


def test_a_copy_to_a_missing_queue_is_refused_not_dropped(conn, queue):
    task = Task("hello.", "r-1", 1, "r")
    with pytest.raises(PublishRefused, match=f"queue '{queue}'"):
        rabbitmq.publish_copy(conn, queue, task.encode(), task.properties(), {"x-attempt": 2})


def test_a_copy_declares_its_queue_if_asked_and_is_persistent_with_the_new_headers(
    conn, broker_url, queue
):
    dead = rabbitmq.dead_letter_name(queue)
    task = Task("hello.", "r-1", 1, "r")
    headers = {"x-failure-reason": "boom"}
    rabbitmq.publish_copy(conn, dead, task.encode(), task.properties(), headers, declare=True)
    [(_m, props, body)] = drain(broker_url, dead)
    assert body == b"hello." and props.message_id == "r-1" and props.delivery_mode == 2
    assert props.headers == headers


def test_a_channel_the_broker_closes_under_a_consumer_is_connection_lost_with_its_code(
    conn, broker_url, queue
):
    consumer, info = consume(conn, Settings(urls=(broker_url,), queue=queue), prefetch=1)
    assert info.created
    consumer.ack(99)  # no such delivery: the broker closes the channel
    with pytest.raises(ConnectionLost) as lost:
        for _ in range(50):
            consumer.pump(0.1)
    assert lost.value.reply_code == PRECONDITION_FAILED
    assert lost.value.message.startswith("the broker closed the channel: 406")
    consumer.close()  # on a lost channel too, closing never raises


def test_a_queue_deleted_under_a_consumer_is_connection_lost(conn, broker_url, queue):
    consumer, _info = consume(conn, Settings(urls=(broker_url,), queue=queue), prefetch=1)
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
        rabbitmq.queue_counts(conn, queue)
    with pytest.raises(ConnectionLost):
        rabbitmq.publish_copy(conn, queue, b"x", Task("x", "t").properties(), {})


def test_tasks_taken_unacked_go_back_when_given_back(conn, broker_url, queue):
    for body in ("a", "b"):
        task = Task(body, f"t-{body}")
        rabbitmq.publish_copy(conn, queue, task.encode(), task.properties(), {}, declare=True)
    channel = rabbitmq.open_channel(conn)
    got = [channel.get(queue), channel.get(queue), channel.get(queue)]
    assert [d[2] for d in got if d] == [b"a", b"b"] and got[2] is None
    channel.give_back_all()
    assert queue_counts(broker_url, queue) == (2, 0)


# The queue's shape: what we create, and what we find -----------------------------------------
def declare_raw(url: str, queue: str, arguments: dict | None) -> None:
    c = pika.BlockingConnection(pika.URLParameters(url))
    try:
        c.channel().queue_declare(queue, durable=True, arguments=arguments)
    finally:
        c.close()


def test_a_quorum_queue_we_create_takes_the_tutorials_declaration_and_dead_letters_by_policy(
    conn, broker_url, queue
):
    _channel, info = rabbitmq.declare_queue(conn, Settings(urls=(broker_url,), queue=queue))
    assert (info.created, info.queue_type, info.note) == (True, "quorum", "")
    # Our policy, on this queue alone, gives what the broker needs never to drop a task ...
    policy = task_policy_of(broker_url, queue)
    assert policy is not None and policy["pattern"] == f"^{re.escape(queue)}$"
    assert policy["definition"] == dead_letter_settings(queue)
    assert queue_counts(broker_url, f"{queue}.dead") == (0, 0)  # declared with it
    # ... so the queue itself has only its type, and the tutorial's scripts declare it.
    declare_like_the_tutorial(broker_url, queue)
    # Declaring it again (emit, work and tasks all do) finds it as it is, with no note;
    # the policy in force is looked up (work and tasks status) rather than assumed.
    _channel, again = rabbitmq.declare_queue(conn, Settings(urls=(broker_url,), queue=queue))
    assert (again.created, again.queue_type, again.note) == (False, "quorum", "")
    assert again.no_dead_letter_args
    assert rabbitmq.probe_queue_type(conn, queue) == "quorum"


#: A management URL where nothing answers (the discard port): no policy can be set there.
NOWHERE = "http://127.0.0.1:9/"


def test_where_no_policy_can_be_set_a_quorum_queue_carries_its_dead_letter_arguments(
    conn, broker_url, queue
):
    settings = Settings(urls=(broker_url,), queue=queue, management_url=NOWHERE)
    _channel, info = rabbitmq.declare_queue(conn, settings)
    assert info.created and info.queue_type == "quorum"
    assert task_policy_of(broker_url, queue) is None
    assert "created with its dead-letter settings as arguments, since the management API" in (
        info.note
    )
    assert "the RabbitMQ tutorial's scripts cannot declare it" in info.note
    # The broker accepts the same declaration again only if every argument matches.
    declare_raw(broker_url, queue, queue_arguments("quorum", queue))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="inequivalent arg"):
        declare_like_the_tutorial(broker_url, queue)
    _channel, again = rabbitmq.declare_queue(conn, settings)
    assert (again.created, again.queue_type, again.note, again.no_dead_letter_args) == (
        False,
        "quorum",
        "",
        False,
    )


def test_a_queue_the_tutorial_made_first_is_ours_to_use_as_it_is(conn, broker_url, queue):
    declare_like_the_tutorial(broker_url, queue)
    _channel, info = rabbitmq.declare_queue(conn, Settings(urls=(broker_url,), queue=queue))
    assert (info.created, info.queue_type, info.no_dead_letter_args) == (False, "quorum", True)
    assert task_policy_of(broker_url, queue) is None  # an existing queue is used as it is
    declare_like_the_tutorial(broker_url, queue)


@pytest.mark.parametrize("how", ["policy", "arguments"])
def test_a_message_rejected_past_the_delivery_limit_lands_in_the_dead_queue_not_nowhere(
    conn, broker_url, queue, how
):
    """Another client that keeps rejecting a message: the broker gives up at its limit, into
    <queue>.dead, whether our policy or the queue's own arguments set it. (From RabbitMQ 4.3
    only a reject counts towards the limit: a nack is a plain return, which never does.)"""
    nowhere = NOWHERE if how == "arguments" else None
    rabbitmq.declare_queue(conn, Settings(urls=(broker_url,), queue=queue, management_url=nowhere))
    task = Task("bounced", "b-1")
    rabbitmq.publish_copy(conn, queue, task.encode(), task.properties(), {})
    channel = rabbitmq.open_channel(conn)
    deliveries = 0
    for _ in range(200):
        got = channel.get(queue)
        if got is None:
            if queue_counts(broker_url, f"{queue}.dead")[0]:
                break
            conn.sleep(0.05)
            continue
        deliveries += 1
        channel.reject(got[0].delivery_tag)
    assert deliveries == rabbitmq.DELIVERY_LIMIT + 1
    [(_m, props, body)] = drain(broker_url, f"{queue}.dead")
    assert body == b"bounced" and props.headers["x-first-death-reason"] == "delivery_limit"


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_an_old_quorum_queue_without_dead_letter_arguments_is_used_as_it_is_and_flagged(
    conn, broker_url, queue, queue_type
):
    declare_raw(broker_url, queue, {"x-queue-type": "quorum"})  # as the code before made them
    _channel, info = rabbitmq.declare_queue(
        conn, Settings(urls=(broker_url,), queue=queue, queue_type=queue_type)
    )
    assert (info.created, info.queue_type, info.no_dead_letter_args) == (False, "quorum", True)
    assert info.note == (
        ""
        if queue_type == "quorum"
        else f"queue '{queue}' exists as a quorum queue; using it as it is"
    )
    assert rabbitmq.probe_queue_type(conn, queue) == "quorum"


@pytest.mark.parametrize("arguments", [{"x-queue-type": "classic"}, None])
def test_a_classic_queue_keeps_its_shape_for_us_and_for_the_tutorial(
    conn, broker_url, queue, arguments
):
    declare_raw(broker_url, queue, arguments)  # ours with --queue-type classic, the tutorial's
    _channel, info = rabbitmq.declare_queue(conn, Settings(urls=(broker_url,), queue=queue))
    assert (info.queue_type, info.no_dead_letter_args) == ("classic", False)
    assert info.note == f"queue '{queue}' exists as a classic queue; using it as it is"
    _channel, info = rabbitmq.declare_queue(
        conn, Settings(urls=(broker_url,), queue=queue, queue_type="classic")
    )
    assert (info.queue_type, info.note, info.no_dead_letter_args) == ("classic", "", False)
    declare_raw(broker_url, queue, arguments)  # still the tutorial's shape


def test_a_quorum_queue_of_ours_is_used_as_it_is_by_a_classic_declaration(conn, broker_url, queue):
    rabbitmq.declare_queue(conn, Settings(urls=(broker_url,), queue=queue))
    _channel, info = rabbitmq.declare_queue(
        conn, Settings(urls=(broker_url,), queue=queue, queue_type="classic")
    )
    assert (info.queue_type, info.no_dead_letter_args) == ("quorum", True)  # by our policy
    assert info.note == f"queue '{queue}' exists as a quorum queue; using it as it is"


def test_the_dead_letter_policy_gives_what_the_arguments_would():
    assert {f"x-{k}": v for k, v in dead_letter_settings("q").items()} == {
        k: v for k, v in queue_arguments("quorum", "q").items() if k != "x-queue-type"
    }
    assert dead_letter_settings("q") == {
        "dead-letter-exchange": "",
        "dead-letter-routing-key": "q.dead",
        "delivery-limit": rabbitmq.DELIVERY_LIMIT,
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout "
            "value used: 3000 ms. This timeout value can be configured, see consumers doc "
            "guide to learn more",
            3.0,
        ),
        ("PRECONDITION_FAILED - delivery acknowledgement timed out", 0.0),
        ("PRECONDITION_FAILED - unknown delivery tag 99", None),
    ],
)
def test_a_consumer_timeout_is_read_from_the_brokers_words(text, seconds):
    exc = pika.exceptions.ChannelClosedByBroker(406, text)
    assert consumer_timeout_of(exc) == seconds
    if seconds:
        assert plain_reason(exc) == (
            "the broker's consumer_timeout (3 s) ran out: it has given this task back to the queue"
        )


def two_deliveries_waiting(conn, queue: str) -> Consumer:
    """A consumer (prefetch 2) with two deliveries come but not taken yet."""
    for n in (1, 2):
        task = Task(f"t{n}", f"t-{n}")
        rabbitmq.publish_copy(conn, queue, task.encode(), task.properties(), {}, declare=True)
    consumer, _info = consume(conn, Settings(queue=queue, queue_type="classic"), prefetch=2)
    while len(consumer.deliveries) < 2:
        consumer.pump(0.1)
    return consumer


def test_deliveries_already_here_when_the_broker_cancels_are_taken_first_and_can_be_acked(
    conn, broker_url, queue
):
    """The queue is deleted under a consumer holding deliveries it has not taken yet: they
    are handed out (and acked) before pump says the consumer is gone, never dropped."""
    consumer = two_deliveries_waiting(conn, queue)
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    other.channel().queue_delete(queue)
    other.close()
    taken = []
    with pytest.raises(ConnectionLost, match="cancelled our consumer"):
        for _ in range(50):
            consumer.pump(0.1)
            while consumer.deliveries:
                method, _props, body = consumer.deliveries.popleft()
                consumer.ack(method.delivery_tag)
                taken.append(body)
    assert taken == [b"t1", b"t2"]


def test_a_closed_channel_is_said_at_once_even_with_deliveries_waiting(conn, queue):
    """They cannot be acked any more (the broker has put them back): pump says so at once."""
    consumer = two_deliveries_waiting(conn, queue)
    consumer.ack(99)  # no such delivery: the broker closes the channel
    with pytest.raises(ConnectionLost, match="406"):
        for _ in range(50):
            consumer.pump(0.1)
    assert len(consumer.deliveries) == 2  # still there, for the worker to name as it drops them


def test_a_broker_that_does_not_answer_is_connection_lost_not_a_hang(broker_url, monkeypatch):
    # The broker's answers are held back, the connection stays open: as a RabbitMQ 4 node
    # leaves a queue.declare on a quorum queue whose leader was just killed unanswered.
    relay = Relay(int(urlsplit(broker_url).port or 5672))
    url = f"amqp://guest:guest@127.0.0.1:{relay.port}/%2F"
    conn, _url = rabbitmq.connect(Settings(urls=(url,)), client_name="test")
    monkeypatch.setattr(internals, "ANSWER_WITHIN", 1.0)
    relay.stall()
    try:
        with pytest.raises(ConnectionLost, match="did not answer queue_counts within 1 s"):
            rabbitmq.queue_counts(conn, "anything")
        conn.close()  # does not wait for an answer either
        assert not conn.is_open
    finally:
        relay.resume()
    # Answers that come in time are waited for as before.
    again, _url = rabbitmq.connect(Settings(urls=(url,)), client_name="test")
    assert rabbitmq.queue_counts(again, "anything") is None
    again.close()
    relay.close()
