"""Dramatiq beside our worker in `make bench`: a RabbitmqBroker, one no-op actor, a stopwatch.

    dramatiq bench.peer_dramatiq --processes 1 --threads 1 --queues QUEUE   (the worker)
    python -m bench.peer_dramatiq fill COUNT                                 (the tasks)

bench/peers.py sets the environment: AMQP_URL, BENCH_PEER_QUEUE, BENCH_PEER_CLOCK and
BENCH_PEER_COUNT (see bench/peer_clock.py), dramatiq_queue_prefetch=1 (Dramatiq's own knob;
its default is threads * 2), and BENCH_DRAMATIQ_QUORUM_SUBCLASS=1 for QuorumRabbitmqBroker.
Dramatiq itself declares every queue as classic.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from bench.peer_clock import from_env

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
QUEUE = os.environ.get("BENCH_PEER_QUEUE", "bench-peer-dramatiq")
CLOCK = from_env()


class QuorumRabbitmqBroker(RabbitmqBroker):
    """RabbitmqBroker with its queues declared as quorum queues.

    Dramatiq 2.2 has no setting for this (its quorum pull requests were closed unmerged), and
    declaring the queue as quorum beforehand does not help: its own declare, without
    x-queue-type, then fails with 406 PRECONDITION_FAILED on RabbitMQ 3.10. So this reaches
    into a private method; the report says so beside the figure.
    """

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)
        return {**arguments, "x-queue-type": "quorum"}


class Stopwatch(Middleware):
    """Marks each ack on the clock (the first task's start is marked by the actor)."""

    def after_ack(self, broker: Any, message: Any) -> None:
        CLOCK.acked()


SUBCLASS = os.environ.get("BENCH_DRAMATIQ_QUORUM_SUBCLASS") == "1"
broker = QuorumRabbitmqBroker(url=URL) if SUBCLASS else RabbitmqBroker(url=URL)
broker.add_middleware(Stopwatch())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    """The no-op task: it only marks the clock."""
    CLOCK.started()


def fill(count: int) -> None:
    """Enqueue COUNT no-op messages through Dramatiq's own client (bench/peers.py counts them)."""
    for _ in range(count):
        noop.send()
    broker.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fill":
        sys.exit("usage: python -m bench.peer_dramatiq fill COUNT")
    fill(int(sys.argv[2]))
