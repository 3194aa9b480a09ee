"""Celery beside our worker in `make bench`: an app, one no-op task, a stopwatch.

    celery -A bench.peer_celery worker -P prefork -c 1 -Q QUEUE   (the worker)
    python -m bench.peer_celery fill COUNT                         (the tasks)

bench/peers.py sets the environment: AMQP_URL, BENCH_PEER_QUEUE, BENCH_PEER_QUEUE_TYPE
(classic or quorum), BENCH_PEER_CLOCK and BENCH_PEER_COUNT (see bench/peer_clock.py).
The settings are the ones Celery's docs give for fair dispatch: the ack after the task
(acks_late) and a prefetch multiplier of 1, so with -c 1 the worker holds one task at a time.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery
from celery.worker.request import Request

from bench.peer_clock import from_env

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
QUEUE = os.environ.get("BENCH_PEER_QUEUE", "bench-peer-celery")
QUEUE_TYPE = os.environ.get("BENCH_PEER_QUEUE_TYPE", "classic")
CLOCK = from_env()

SETTINGS: dict[str, Any] = {
    "task_default_queue": QUEUE,
    # Celery >= 5.5 declares the default queue with x-queue-type; with a quorum queue the
    # worker turns global QoS off by itself (worker_detect_quorum_queues, on by default).
    "task_default_queue_type": QUEUE_TYPE,
    # Celery's docs pair quorum queues with a topic exchange: its native delayed delivery
    # (for ETA tasks, switched on with quorum queues) cannot route through a direct one.
    "task_default_exchange_type": "topic" if QUEUE_TYPE == "quorum" else "direct",
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
}

app = Celery("bench_peer", broker=URL)
app.conf.update(SETTINGS)


class TimedRequest(Request):
    """Celery's request, marking the clock once its ack is sent (in the pool's parent)."""

    def acknowledge(self) -> None:
        first = not self.acknowledged
        super().acknowledge()
        if first:
            CLOCK.acked()


@app.task(name="bench.noop", Request=TimedRequest)
def noop() -> None:
    """The no-op task: it only marks the clock."""
    CLOCK.started()


def fill(count: int) -> None:
    """Send COUNT no-op tasks through Celery's own client (bench/peers.py counts them)."""
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            noop.apply_async(producer=producer)
    app.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fill":
        sys.exit("usage: python -m bench.peer_celery fill COUNT")
    fill(int(sys.argv[2]))
