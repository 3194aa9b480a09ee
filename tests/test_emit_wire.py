"""The fast publish encoding (emitter/wire.py) is byte for byte what pika sends."""

from __future__ import annotations

import pytest
from pika import frame, spec

from emitter.wire import PublishEncoder
from utils.task import Task

BODY_MAX = 131072 - 8


def pika_bytes(task: Task, queue: str, timestamp: int) -> bytes:
    """The frames pika's channel.basic_publish(..., mandatory=True) writes for the task."""
    body = task.encode()
    publish = spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
    return b"".join(
        (
            frame.Method(1, publish).marshal(),
            frame.Header(1, len(body), task.properties(timestamp)).marshal(),
            frame.Body(1, body).marshal(),
        )
    )


@pytest.mark.parametrize(
    "task",
    [
        Task.from_row("Task 1 .", 1, "20261126T235900-ab12", "tasks.csv"),
        Task.from_row("Tâche ünïcode ...", 2_000_000_000, "20261126T235900-ab12", "-"),
        Task.from_row("x", 7, "run", "données/ç.csv"),
        Task.from_row("y" * BODY_MAX, 3, "run", "big.csv"),
    ],
    ids=["ascii", "unicode-big-row", "unicode-source", "one-full-frame"],
)
def test_the_fast_encoding_equals_pikas(task: Task) -> None:
    enc = PublishEncoder(1, "task_queue", BODY_MAX, 1_790_000_000)
    assert enc.encode(task) == pika_bytes(task, "task_queue", 1_790_000_000)
    enc.set_time(1_790_000_123)  # the timestamp moves on
    assert enc.encode(task) == pika_bytes(task, "task_queue", 1_790_000_123)


@pytest.mark.parametrize(
    "task",
    [
        Task.from_row("y" * (BODY_MAX + 1), 1, "run", "big.csv"),  # needs two body frames
        Task.from_row("z", 2**31, "run", "f.csv"),  # a row past a 32-bit int
        Task("again", "run-1", 1, "run", "f.csv", attempt=2),
        Task("no source", "id", 1, "run", None),
    ],
    ids=["two-frames", "huge-row", "attempt", "no-source"],
)
def test_tasks_outside_the_fast_path_are_left_to_pika(task: Task) -> None:
    assert PublishEncoder(1, "q", BODY_MAX, 0).encode(task) is None
