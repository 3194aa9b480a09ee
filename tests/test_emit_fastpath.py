"""emit's fast path (emitter/fastpath.py): pika's bytes, pika's counters, pika's version.

If a pika upgrade removes an internal the fast path needs, or is a version it was not
tested with, the self-check test below fails: the suite turns red instead of emit silently
getting slower.
"""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest
from pika import frame, spec

from emitter.fastpath import TESTED_PIKA, PublishEncoder, open_fast_path, self_check
from emitter.publisher import Publisher
from tests.helpers import ROOT, drain, events, run
from utils.settings import Settings
from utils.task import Task, new_run_id

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


def test_the_self_check_steps_aside_for_an_untested_pika_or_missing_internals() -> None:
    assert "pika 9.9.9 is not a version the fast path was tested with" in (
        self_check(object(), version="9.9.9") or ""
    )
    tested = next(iter(TESTED_PIKA))
    assert "_adapter_emit_data" in (self_check(object(), version=tested) or "")


def publish_in_process(url: str, queue: str, tasks: list[Task], fast: bool) -> Publisher:
    """Run our Publisher in this process over the tasks; the queue must exist."""
    publisher = Publisher(Settings(urls=(url,), queue=queue), fast_path=fast)
    result = publisher.publish(iter(tasks), url)
    assert result.error is None and result.confirmed == len(tasks)
    return publisher


def declare(url: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        conn.close()


def test_the_fast_path_runs_on_the_installed_pika(broker_url, queue, caplog):
    """The red light for a pika upgrade: the self-check must pass on the pika we ship with."""
    declare(broker_url, queue)
    run_id = new_run_id()
    tasks = [Task.from_row(f"Task {n} .", n, run_id, "t.csv") for n in range(1, 51)]
    with caplog.at_level("DEBUG", logger="emitter.fastpath"):
        publisher = publish_in_process(broker_url, queue, tasks, fast=True)
    assert publisher.result.published_fast == 50, (
        f"the fast path stepped aside on pika {pika.__version__}: {caplog.text.strip()}\n"
        "Run the emit tests, then add the version to TESTED_PIKA in emitter/fastpath.py "
        "and to the pika range in pyproject.toml and requirements.txt; or mend the fast path."
    )
    assert len(drain(broker_url, queue)) == 50


def test_the_fast_path_keeps_pikas_byte_and_frame_counters_true(broker_url, queue):
    declare(broker_url, queue)
    task = Task.from_row("Task 1 ...", 1, new_run_id(), "t.csv")
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        # The asynchronous connection under the blocking one, as emit has it. Read while it
        # is open: pika resets its counters when a connection closes.
        impl = conn._impl
        fast = open_fast_path(impl, ch.channel_number, queue)
        assert fast is not None
        stamp = int(time.time())
        fast.set_time(stamp)
        before = (impl.bytes_sent, impl.frames_sent)
        ch.basic_publish("", queue, task.encode(), task.properties(stamp), mandatory=True)
        by_pika = (impl.bytes_sent, impl.frames_sent)
        assert fast.publish(task)
        by_fast = (impl.bytes_sent, impl.frames_sent)
        conn.process_data_events(0)  # let the I/O loop write the fast path's frames
    finally:
        conn.close()
    assert by_fast[0] - by_pika[0] == by_pika[0] - before[0] > 0  # bytes
    assert by_fast[1] - by_pika[1] == by_pika[1] - before[1] == 3  # method, header, body
    (_, p1, b1), (_, p2, b2) = drain(broker_url, queue)
    assert (vars(p1), b1) == (vars(p2), b2)


def comparable(props: pika.BasicProperties, run_id: str) -> dict[str, object]:
    """Every property of a message, with its run's id taken out (each run has its own)."""
    out = dict(vars(props))
    out["headers"] = {**props.headers, "run-id": "RUN"}
    out["message_id"] = props.message_id.replace(run_id, "RUN", 1)
    del out["timestamp"]  # the second the message was sent: checked on its own
    return out


def test_emit_publishes_the_same_messages_with_and_without_the_fast_path(
    env, broker_url, queue, logs, tmp_path: Path
):
    rows = (ROOT / "tasks.csv").read_text().splitlines()
    rows += ["Tâche ünïcode ...", "big " + "x" * 200_000]  # big: two body frames
    csv = tmp_path / "t.csv"
    csv.write_text("".join(f"{r}\n" for r in rows))
    got = {}
    for switch in ("1", "0"):
        began = int(time.time())
        r = run("emit", str(csv), env={**env, "EMIT_FAST_PATH": switch})
        ended = int(time.time())
        assert r.returncode == 0, r.stderr
        messages = drain(broker_url, queue)
        assert all(began <= p.timestamp <= ended for _, p, _ in messages)
        got[switch] = messages
    done = [e for e in events(logs / "emitter.log") if e["event"] == "emit_done"]
    # Fast: all but the two-frame body, which is left to pika. Plain: none.
    assert [e["published_fast"] for e in done] == [str(len(rows) - 1), "0"]

    fast, plain = got["1"], got["0"]
    assert [b.decode() for _, _, b in fast] == [b.decode() for _, _, b in plain] == rows
    fast_run, plain_run = (m[0][1].headers["run-id"] for m in (fast, plain))
    assert fast_run != plain_run
    for (fm, fp, _), (pm, pp, _) in zip(fast, plain, strict=True):
        assert (fm.exchange, fm.routing_key) == (pm.exchange, pm.routing_key) == ("", queue)
        assert comparable(fp, fast_run) == comparable(pp, plain_run)
    # and the properties are the ones emit promises, not merely equal
    first = comparable(fast[0][1], fast_run)
    assert first["delivery_mode"] == 2 and first["content_type"] == "text/plain"
    assert first["message_id"] == "RUN-1" and first["headers"]["source-file"] == str(csv)
