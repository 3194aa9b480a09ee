"""How each RabbitMQ version counts a message that comes back, and how we count attempts.

tests/fixtures/redeliveries.json holds what 3.10.8, 4.0.5 and 4.3.5 really sent
(tests/redeliveries.py captured it). decide() is unit-tested on every capture, and a broker
test captures again on the broker under test and compares.
"""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest

from tests import redeliveries
from tests.helpers import ROOT, rabbitmq_version
from utils.task import Task
from worker.settle import (
    ARRIVED,
    DEAD_LETTER,
    REDELIVERED,
    RETRY_REPUBLISH,
    RUN,
    decide,
)

CAPTURES: dict[str, Any] = json.loads((ROOT / redeliveries.FIXTURE).read_text())["versions"]
CASES = [(v, case) for v, got in CAPTURES.items() for case in got if case != "version"]


def deliveries(version: str, case: str) -> list[dict[str, Any]]:
    got = CAPTURES[version][case]
    return got["deliveries"] if isinstance(got, dict) else got


def task_of(seen: dict[str, Any]) -> Task:
    """The task our worker would read from a delivery with these headers."""
    headers = {k: v for k, v in seen.items() if k.startswith("x-") and v is not None}
    props = pika.BasicProperties(message_id="run-1", headers={"run-id": "run", **headers})
    return Task.decode(props, b"Task 1 .")


def test_the_captures_hold_the_three_versions_and_their_known_differences():
    assert {v: CAPTURES[v]["version"] for v in CAPTURES} == {
        "3.10": "3.10.8",
        "4.0": "4.0.5",
        "4.3": "4.3.5",
    }
    # 4.3: a nack and a consumer_timeout raise only x-acquired-count; a reject both.
    assert [d["x-delivery-count"] for d in deliveries("4.3", "quorum, nack")] == [None] * 4
    assert [d["x-acquired-count"] for d in deliveries("4.3", "quorum, nack")] == [None, 1, 2, 3]
    assert [d["x-delivery-count"] for d in deliveries("4.3", "quorum, reject")] == [None, 1, 2, 3]
    timeout = CAPTURES["4.3"]["quorum, consumer_timeout"]
    assert [d["x-acquired-count"] for d in timeout["deliveries"]] == [None, 1, 2]
    assert {s["signal"] for s in timeout["signals"]} == {"basic.cancel"}
    assert all(s["channel_open"] and s["queue_still_there"] for s in timeout["signals"])
    # ... and enforces no consumer_timeout on a classic queue, where 3.10 and 4.0 close the
    # channel, naming the timeout, on both queue types.
    assert {s["signal"] for s in CAPTURES["4.3"]["classic, consumer_timeout"]["signals"]} == {
        f"none within {redeliveries.QUIET_FOR} s"
    }
    for v in ("3.10", "4.0"):
        for queue_type in ("quorum", "classic"):
            signals = CAPTURES[v][f"{queue_type}, consumer_timeout"]["signals"]
            assert {(s["signal"], s["code"]) for s in signals} == {("channel closed", 406)}
            assert all(
                "delivery acknowledgement on channel N timed out" in s["text"] for s in signals
            )


@pytest.mark.parametrize(("version", "case"), [c for c in CASES if c[1].startswith("quorum")])
def test_on_a_quorum_queue_every_delivery_that_came_back_counts_as_an_attempt(version, case):
    """Whatever gave it back (a retry, a kill, a lost connection, a consumer_timeout), on
    every version the nth delivery is attempt n, so --max-attempts bounds it."""
    seen = deliveries(version, case)
    attempts = [task_of(d).attempt for d in seen]
    assert attempts == list(range(1, len(seen) + 1)), (version, case, seen)
    # With --max-attempts 2, the third delivery goes to <queue>.dead without running.
    decisions = [
        decide(REDELIVERED if d["redelivered"] else ARRIVED, a, "quorum", 2).action
        for d, a in zip(seen, attempts, strict=True)
    ]
    assert decisions[:2] == [RUN, RUN] and set(decisions[2:]) == {DEAD_LETTER}


@pytest.mark.parametrize(("version", "case"), [c for c in CASES if c[1].startswith("classic")])
def test_on_a_classic_queue_the_worker_counts_each_redelivery_itself(version, case):
    """A classic queue counts nothing; a redelivered message is counted by a confirmed copy
    with x-attempt + 1 (docs/DESIGN.md), so the broker's silence loops nothing."""
    seen = deliveries(version, case)
    assert [task_of(d).attempt for d in seen] == [1] * len(seen)
    assert [d["redelivered"] for d in seen] == [False] + [True] * (len(seen) - 1)
    again = decide(REDELIVERED, 1, "classic", 3)
    assert (again.action, again.attempt) == (RETRY_REPUBLISH, 2)
    assert decide(REDELIVERED, 3, "classic", 3).action is DEAD_LETTER


def test_our_own_attempt_count_and_the_brokers_add_up_on_a_copy():
    """A copy (a classic retry, later a delayed retry) carries x-attempt and starts the
    broker's count afresh: attempt 2 lost twice more is attempt 4, on any version."""
    assert task_of({"x-attempt": 2}).attempt == 2
    assert task_of({"x-attempt": 2, "x-delivery-count": 2}).attempt == 4
    assert task_of({"x-attempt": 2, "x-acquired-count": 2}).attempt == 4
    assert task_of({"x-delivery-count": 1, "x-acquired-count": 3}).attempt == 4


def test_the_broker_under_test_sends_what_its_versions_capture_says(make_node):
    """Captured again, on a node of the test's own (the capture changes its consumer_timeout)."""
    node = make_node(port_offset=11)
    key = ".".join(map(str, rabbitmq_version(node.url)[:2]))
    if key not in CAPTURES:
        pytest.fail(
            f"no capture for RabbitMQ {key}: run 'python -m tests.redeliveries URL' on it and "
            f"add the result to {redeliveries.FIXTURE}",
            pytrace=False,
        )
    node.ctl("eval", redeliveries.SET_TIMEOUT)
    live = redeliveries.capture(node.url)
    assert live["version"].startswith(key + ".")
    want = {k: v for k, v in CAPTURES[key].items() if k != "version"}
    assert {k: v for k, v in live.items() if k != "version"} == want
