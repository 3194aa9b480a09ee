"""What a RabbitMQ broker really sends when a delivery comes back: captured, not assumed.

Each case gives one message back to its queue a few times, in one way (nack, reject, a
lost connection, the broker's consumer_timeout), and records what every delivery of it
carried: `redelivered`, `x-delivery-count`, `x-acquired-count`, and how the broker
signalled a consumer_timeout. tests/fixtures/redeliveries.json holds one capture per
RabbitMQ version; tests/test_redeliveries.py checks that the broker under test still
sends what its version's capture says, and unit-tests decide() on every capture.

    python -m tests.redeliveries URL    # capture on the broker at URL, print it as JSON
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from typing import Any

import pika
import pika.exceptions as px

from utils.rabbitmq import server_version

FIXTURE = "tests/fixtures/redeliveries.json"
#: How many times each case gives the message back.
ROUNDS = 3
#: The consumer_timeout the capture sets on the broker, in milliseconds, with the channel
#: tick (3.10 and 4.0 check on it) that makes the broker notice within about that.
TIMEOUT_MS = 1500
TICK_MS = 500
#: A broker that has not signalled a timeout this long after it (seconds) enforces none.
QUIET_FOR = 15

HEADERS = ("x-delivery-count", "x-acquired-count")


def version_of(conn: pika.BlockingConnection) -> str:
    return ".".join(map(str, server_version(conn)))


def _seen(method: Any, props: Any) -> dict[str, Any]:
    headers = props.headers or {}
    return {"redelivered": bool(method.redelivered), **{h: headers.get(h) for h in HEADERS}}


def _declare(ch: Any, queue_type: str) -> str:
    name = f"capture-{queue_type}-{uuid.uuid4().hex[:8]}"
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
    ch.basic_publish("", name, b"one task", pika.BasicProperties(delivery_mode=2, message_id="m1"))
    return name


def _get_one(ch: Any, queue: str, wait: float = 30.0) -> tuple[Any, Any]:
    """The next delivery of `queue` through a consumer (quorum queues count those)."""
    got: list[tuple[Any, Any]] = []

    def on(channel: Any, method: Any, props: Any, body: bytes) -> None:
        got.append((method, props))

    ch.basic_qos(prefetch_count=1)
    tag = ch.basic_consume(queue, on)
    end = time.monotonic() + wait
    while not got and time.monotonic() < end:
        ch.connection.process_data_events(time_limit=0.1)
    ch.basic_cancel(tag)
    if not got:
        raise RuntimeError(f"no delivery from {queue} within {wait:g} s")
    return got[0]


def _last(ch: Any, queue: str) -> dict[str, Any]:
    """The message's last delivery, acked: what it carried."""
    method, props = _get_one(ch, queue)
    ch.basic_ack(method.delivery_tag)
    return _seen(method, props)


def _clean_up(conn: pika.BlockingConnection, queue: str) -> None:
    if conn.is_open:
        conn.channel().queue_delete(queue)
        conn.close()


def capture_giving_back(url: str, queue_type: str, how: str) -> list[dict[str, Any]]:
    """ROUNDS + 1 deliveries of one message, given back after each by `how`."""
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    queue = _declare(ch, queue_type)
    seen = []
    try:
        for _ in range(ROUNDS):
            method, props = _get_one(ch, queue)
            seen.append(_seen(method, props))
            if how == "nack":
                ch.basic_nack(method.delivery_tag, requeue=True)
            elif how == "reject":
                ch.basic_reject(method.delivery_tag, requeue=True)
            elif how == "lost connection":
                conn.close()  # unacked: the broker gives it back
                conn = pika.BlockingConnection(params)
                ch = conn.channel()
            else:
                raise ValueError(how)
        seen.append(_last(ch, queue))
    finally:
        _clean_up(conn, queue)
    return seen


def capture_consumer_timeout(url: str, queue_type: str) -> dict[str, Any]:
    """A consumer holds one delivery past the broker's consumer_timeout, twice over.

    The caller sets the node's consumer_timeout to TIMEOUT_MS and its channel tick to
    TICK_MS (SET_TIMEOUT, with rabbitmqctl eval). Records how each
    timeout was signalled (a closed channel, or basic.cancel with the channel open), what
    settling the timed-out delivery does then, and the headers of every delivery.
    """
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    queue = _declare(ch, queue_type)
    result: dict[str, Any] = {"deliveries": [], "signals": []}
    try:
        for _ in range(2):
            cancelled: list[Any] = []
            got: list[tuple[Any, Any]] = []
            ch.add_on_cancel_callback(lambda frame, c=cancelled: c.append(frame))
            ch.basic_qos(prefetch_count=1)
            ch.basic_consume(queue, lambda c, m, p, b, g=got: g.append((m, p)))
            end = time.monotonic() + 30
            while not got and time.monotonic() < end:
                conn.process_data_events(time_limit=0.1)
            method, props = got[0]
            result["deliveries"].append(_seen(method, props))
            end = time.monotonic() + QUIET_FOR
            signal: dict[str, Any] = {"signal": f"none within {QUIET_FOR} s"}
            while time.monotonic() < end:
                try:
                    conn.process_data_events(time_limit=0.2)
                except px.AMQPError as exc:
                    signal = {"signal": "connection closed", "text": str(exc)}
                    break
                if not ch.is_open:
                    reason = getattr(ch, "_closing_reason", None)
                    text = getattr(reason, "reply_text", str(reason))
                    text = re.sub(r"channel \d+", "channel N", text)
                    signal = {
                        "signal": "channel closed",
                        "code": getattr(reason, "reply_code", None),
                        "text": re.sub(r"Timeout value used: \d+ ms.*", "...", text),
                    }
                    break
                if cancelled:
                    # RabbitMQ 4.3 keeps the consumer, timed out, on the open channel;
                    # settling the delivery there can resume it under a tag pika has
                    # dropped, so the channel is closed (the worker drops the connection).
                    signal = {"signal": "basic.cancel", "channel_open": ch.is_open}
                    check = conn.channel()
                    check.queue_declare(queue, passive=True)
                    check.close()
                    signal["queue_still_there"] = True
                    ch.close()
                    break
            result["signals"].append(signal)
            if ch.is_open:
                ch.close()  # what it still holds (no timeout came) goes back
            ch = conn.channel()
        result["deliveries"].append(_last(ch, queue))
    finally:
        _clean_up(conn, queue)
    return result


#: The Erlang expression, for `rabbitmqctl eval`, that a consumer_timeout capture needs.
SET_TIMEOUT = (
    f"application:set_env(rabbit, consumer_timeout, {TIMEOUT_MS}), "
    f"application:set_env(rabbit, channel_tick_interval, {TICK_MS})."
)


def capture(url: str, timeout: bool = True) -> dict[str, Any]:
    """Every case on the broker at `url`, keyed by case (and the version it ran on)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    version = version_of(conn)
    conn.close()
    out: dict[str, Any] = {"version": version}
    for queue_type in ("quorum", "classic"):
        for how in ("nack", "reject", "lost connection"):
            out[f"{queue_type}, {how}"] = capture_giving_back(url, queue_type, how)
    if timeout:
        for queue_type in ("quorum", "classic"):
            out[f"{queue_type}, consumer_timeout"] = capture_consumer_timeout(url, queue_type)
    return out


if __name__ == "__main__":
    json.dump(capture(sys.argv[1]), sys.stdout, indent=1)
    print()
