"""Workers as real processes against the real broker, and the log they write."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path

import pika
import pytest

import utils.eventlog.log as eventlog_log
from inspector.analysis import summarise_run, worker_rows
from inspector.runs import latest_run, read_logs
from tests.helpers import (
    WAIT,
    done_rows,
    drain,
    events,
    no_traceback,
    queue_counts,
    queue_ready,
    run,
    spawn,
    stop_when_done,
    wait_for,
    wait_for_event,
)
from utils import rabbitmq
from utils.errors import ConnectionLost
from utils.eventlog.format import format_event, now_iso, parse_line
from utils.eventlog.log import EventLog
from utils.settings import Settings
from utils.task import Task
from worker.consumer import Consumer, consume
from worker.handlers import DotSleep
from worker.loop import Worker, WorkerOptions
from worker.settle import Outcome, Settler, WorkerTally, decide
from worker.terminal import Terminal


def start_workers(env, logs: Path, tmp_path: Path, n: int, *args: str):
    procs = []
    for i in range(1, n + 1):
        p = spawn("work", "--name", f"w{i}", *args, env=env, out=tmp_path / f"w{i}.out")
        procs.append(p)
    for i, p in enumerate(procs, start=1):
        wait_for_event(logs / f"worker-w{i}.log", "worker_ready", alive=p)
    return procs


def test_three_workers_share_the_tasks_and_each_is_done_exactly_once(work_env, logs, tmp_path):
    procs = start_workers(work_env, logs, tmp_path, 3, "--seconds-per-dot", "0.01")
    assert run("emit", "tasks.csv", env=work_env).returncode == 0
    stop_when_done(procs, logs, 20)
    summary = summarise_run(latest_run(read_logs(logs)))
    assert summary.audit.missing == [] and summary.audit.duplicates == []
    assert sorted(summary.audit.once) == list(range(1, 21))
    per_worker = worker_rows(summary)
    assert set(per_worker) == {"w1", "w2", "w3"}
    assert all(per_worker.values())


def test_a_busy_worker_is_handed_no_second_task_while_the_others_take_the_rest(env, logs, tmp_path):
    """Fair dispatch (prefetch 1): a worker holds one task at a time; the free ones get the rest.

    Row 1 runs until the test lets it finish, and the test does so only once rows 2..13 are
    all done. Had the broker handed the busy worker any of them (as it does without
    prefetch 1), that row would wait behind row 1 and never be done: no timing involved.
    """
    go = tmp_path / "go"
    wait_for_go = f"until [ -e {shlex.quote(str(go))} ]; do sleep 0.05; done"
    script = f'case "$TASK_BODY" in long*) {wait_for_go};; esac'
    procs = start_workers(env, logs, tmp_path, 3, "--exec", script, "--shell")
    bodies = ["long"] + [f"short {i}" for i in range(2, 14)]
    assert run("emit", *(a for b in bodies for a in ("--message", b)), env=env).returncode == 0
    wait_for("rows 2..13 done", lambda: done_rows(logs) >= set(range(2, 14)))
    started = [
        (f"w{i}", e["row"])
        for i in (1, 2, 3)
        for e in events(logs / f"worker-w{i}.log")
        if e["event"] == "started"
    ]
    busy = {w for w, row in started if row == "1"}
    assert len(busy) == 1 and [row for w, row in started if w in busy] == ["1"]
    go.touch()
    stop_when_done(procs, logs, 13)
    summary = summarise_run(latest_run(read_logs(logs)))
    assert sorted(summary.audit.once) == list(range(1, 14)) and summary.audit.duplicates == []
    per_worker = worker_rows(summary)
    assert per_worker[busy.pop()] == [1]


def test_a_task_three_times_the_heartbeat_timeout_is_done_and_acked_once(
    env, broker_url, queue, logs, tmp_path
):
    # heartbeat 1 s: the broker drops a silent client after about 2-3 s; the task takes 6 s.
    w = spawn(
        "work",
        "--name",
        "hb",
        "--heartbeat",
        "1",
        "--seconds-per-dot",
        "1",
        "--max-tasks",
        "1",
        env=env,
        out=tmp_path / "hb.out",
    )
    wait_for_event(logs / "worker-hb.log", "worker_ready", alive=w)
    assert run("emit", "--message", "long ......", env=env).returncode == 0
    assert w.wait() == 0, w.output()
    evs = [e["event"] for e in events(logs / "worker-hb.log")]
    assert evs.count("started") == 1 and evs.count("done") == 1
    assert "connection_lost" not in evs and "ack_lost" not in evs
    assert queue_counts(broker_url, queue) == (0, 0)


def test_a_worker_killed_mid_task_has_its_task_redelivered_and_done(
    env, broker_url, queue, logs, tmp_path
):
    a = spawn("work", "--name", "a", "--seconds-per-dot", "2", env=env, out=tmp_path / "a.out")
    wait_for_event(logs / "worker-a.log", "worker_ready", alive=a)
    assert run("emit", "--message", "doomed ...", env=env).returncode == 0
    wait_for_event(logs / "worker-a.log", "started", alive=a)
    b = spawn(
        "work",
        "--name",
        "b",
        "--seconds-per-dot",
        "0.01",
        "--max-tasks",
        "1",
        env=env,
        out=tmp_path / "b.out",
    )
    wait_for_event(logs / "worker-b.log", "worker_ready", alive=b)
    a.kill()  # SIGKILL, mid-task
    assert b.wait() == 0, b.output()
    started = wait_for_event(logs / "worker-b.log", "started")
    assert started[0]["redelivered"] == "true" and started[0]["body"] == "doomed ..."
    summary = summarise_run(latest_run(read_logs(logs)))
    assert summary.audit.missing == []
    assert queue_counts(broker_url, queue) == (0, 0)


def test_ctrl_c_mid_task_finishes_and_acks_it_then_exits_0(env, broker_url, queue, logs, tmp_path):
    w = spawn("work", "--name", "c", "--seconds-per-dot", "0.5", env=env, out=tmp_path / "c.out")
    wait_for_event(logs / "worker-c.log", "worker_ready", alive=w)
    assert run("emit", "--message", "finish me ..", "--message", "next .", env=env).returncode == 0
    wait_for_event(logs / "worker-c.log", "started", alive=w)
    w.signal(signal.SIGINT)
    assert w.wait() == 0, w.output()
    evs = [e["event"] for e in events(logs / "worker-c.log")]
    assert evs.count("done") == 1 and "shutdown_warm" in evs
    # The finished task was acked; the other one is still waiting for a worker.
    assert queue_counts(broker_url, queue) == (1, 0)


def test_sigusr1_prints_where_each_thread_is_and_the_worker_goes_on(env, logs, tmp_path):
    w = spawn("work", "--name", "u", "--seconds-per-dot", "0.01", env=env, out=tmp_path / "u.out")
    wait_for_event(logs / "worker-u.log", "worker_ready", alive=w)
    w.signal(signal.SIGUSR1)
    stacks = wait_for("the stacks", lambda: "worker/loop.py" in w.output() and w.output(), alive=w)
    assert "most recent call first" in str(stacks) and 'File "' in str(stacks)
    assert run("emit", "--message", "after .", env=env).returncode == 0
    wait_for_event(logs / "worker-u.log", "done", alive=w)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0, w.output()


def test_tutorial_scripts_and_ours_share_a_classic_queue(env, broker_url, queue, logs, tmp_path):
    """The RabbitMQ tutorial's new_task.py/worker.py declare task_queue as durable classic."""
    params = pika.URLParameters(broker_url)
    # The tutorial's new_task.py, in short.
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    ch.basic_publish(
        "",
        queue,
        b"Hello from the tutorial..",
        pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )
    conn.close()
    # Our worker takes it.
    r = run("work", "--name", "ours", "--seconds-per-dot", "0", "--max-tasks", "1", env=env)
    assert r.returncode == 0, r.stderr
    done = [e for e in events(logs / "worker-ours.log") if e["event"] == "done"]
    assert len(done) == 1
    # Our emit, with the tutorial's worker.py on the other side.
    assert run("emit", "--message", "Hello from emit.", env=env).returncode == 0
    got: list[bytes] = []
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.queue_declare(queue=queue, durable=True)
    ch.basic_qos(prefetch_count=1)

    def callback(ch, method, properties, body):
        got.append(body)
        ch.basic_ack(delivery_tag=method.delivery_tag)
        ch.stop_consuming()

    ch.basic_consume(queue=queue, on_message_callback=callback)
    timer = threading.Timer(30, lambda: conn.add_callback_threadsafe(ch.stop_consuming))
    timer.start()
    ch.start_consuming()
    timer.cancel()
    conn.close()
    assert got == [b"Hello from emit."]


# -- prefetch > 1: one ack per batch of instant tasks, the worker in this process -------------
def publish_bodies(url: str, queue: str, bodies: list[bytes]) -> list[str]:
    """Publish each body as emit would (row i+1 of run 'batch'); their task ids, in order."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ids = []
    for row, body in enumerate(bodies, start=1):
        task = Task.from_row(body.decode("utf-8", "replace"), row, "batch", "t.csv")
        ch.basic_publish("", queue, body, task.properties())
        ids.append(task.task_id)
    conn.close()
    return ids


class AckSpy:
    """Watches the real consumer's acks (and the deliveries) of a worker in this process.

    At every ack it notes the tasks whose `done` line is in the log file before the ack
    that covers them was sent (`early`): a task that takes no time must not be one. `first_batch` makes the worker's first pump wait until that
    many deliveries are buffered, so that the first batch is the same on every run.
    """

    def __init__(self, monkeypatch, log: Path, first_batch: int) -> None:
        self.log = log
        self.task_of: dict[int, str] = {}  # delivery tag -> task id
        self.acked: list[int] = []  # tags, in the order the broker was told
        self.calls: list[tuple[int, bool]] = []  # (tag, multiple) of each ack
        self.early: list[str] = []  # tasks logged done before their ack
        self.first_batch = first_batch
        real_deliver = Consumer._on_delivery
        real_ack = Consumer.ack
        real_pump = Consumer.pump
        spy = self

        def on_delivery(consumer, channel, method, properties, body):
            spy.task_of[method.delivery_tag] = properties.message_id
            real_deliver(consumer, channel, method, properties, body)

        def ack(channel, tag, multiple=False):
            done = {e["task"] for e in events(spy.log) if e["event"] == "done"}
            sent = {spy.task_of[t] for t in spy.acked}
            spy.early += sorted(done - sent)
            real_ack(channel, tag, multiple)
            spy.calls.append((tag, multiple))
            covered = [t for t in spy.task_of if t <= tag and t not in spy.acked]
            spy.acked += covered if multiple else [tag]

        def pump(consumer, seconds=None):
            if spy.first_batch:
                n, spy.first_batch = spy.first_batch, 0
                wait_for(
                    f"{n} deliveries buffered",
                    lambda: len(consumer.deliveries) >= n or real_pump(consumer, 0.05),
                )
                return
            real_pump(consumer, seconds)

        monkeypatch.setattr(Consumer, "_on_delivery", on_delivery)
        monkeypatch.setattr(Consumer, "ack", ack)
        monkeypatch.setattr(Consumer, "pump", pump)


def batch_worker(broker_url: str, queue: str, logs: Path, **opts) -> tuple[Worker, EventLog]:
    """A worker with prefetch 10 in this process; its tasks with dots take a millisecond each."""
    settings = Settings(urls=(broker_url,), queue=queue, log_dir=logs)
    log = EventLog(logs / "worker-b.log", echo=False)
    return Worker(settings, WorkerOptions(name="b", prefetch=10, **opts), DotSleep(0.001), log), log


@pytest.mark.parametrize("fast_ack", [True, False], ids=["fast-ack", "basic-ack"])
def test_at_prefetch_10_instant_tasks_share_an_ack_and_no_line_says_done_before_it(
    broker_url, queue, logs, monkeypatch, fast_ack
):
    # The rule deferred_after_ack (worker/settle.py): AckSpy's `early` lists every task
    # whose done line was written before the ack that covers it.
    # The first ten: four instant tasks, a poison message, two instant, one with a dot (run
    # in the helper thread), two instant; then 30 instant tasks as they come.
    bodies = [b"a", b"b", b"c", b"d", b"bad \xff", b"f", b"g", b"h.", b"i", b"j"]
    bodies += [f"t{i}".encode() for i in range(30)]
    ids = publish_bodies(broker_url, queue, bodies)
    spy = AckSpy(monkeypatch, logs / "worker-b.log", first_batch=10)
    worker, log = batch_worker(broker_url, queue, logs, max_tasks=len(bodies), fast_ack=fast_ack)
    try:
        tally = worker.run()
    finally:
        log.close()
    assert (tally.done, tally.dead_lettered, tally.failed) == (39, 1, 0)
    # The first batch: the acks that wait go out before the poison message's and the dotted
    # task's lines (and their own acks), and the last two instant tasks share one.
    assert spy.calls[:5] == [(4, True), (5, False), (7, True), (8, False), (10, True)]
    assert spy.early == [ids[7]]  # only the dotted task: real work logs done, then acks
    assert sorted(spy.acked) == sorted(spy.task_of) == list(range(1, 41))  # each once
    evs = events(logs / "worker-b.log")
    done = [e["task"] for e in evs if e["event"] == "done"]
    assert sorted(done) == sorted(ids[:4] + ids[5:])
    assert [e["task"] for e in evs if e["event"] == "dead_lettered"] == [ids[4]]
    assert queue_counts(broker_url, queue) == (0, 0)
    assert [b for _m, _p, b in drain(broker_url, f"{queue}.dead")] == [b"bad \xff"]


@pytest.mark.parametrize("fast_ack", [True, False], ids=["fast-ack", "basic-ack"])
def test_no_line_is_written_while_an_ack_waits(broker_url, queue, logs, monkeypatch, fast_ack):
    # The rule acks_before_lines (worker/settle.py): the batch of the test above, with every
    # kind of line after instant tasks whose ack waits (a poison message, a dotted task).
    bodies = [b"a", b"b", b"c", b"d", b"bad \xff", b"f", b"g", b"h.", b"i", b"j"]
    bodies += [f"t{i}".encode() for i in range(10)]
    ids = publish_bodies(broker_url, queue, bodies)
    AckSpy(monkeypatch, logs / "worker-b.log", first_batch=10)
    worker, log = batch_worker(broker_url, queue, logs, max_tasks=len(bodies), fast_ack=fast_ack)
    written: list[tuple[str, bool]] = []  # (line, an ack waited when it was written)
    real_write = log._write

    def write(text: str) -> None:
        written.extend((line, worker._settler.acks_waiting) for line in text.split("\n"))
        real_write(text)

    monkeypatch.setattr(log, "_write", write)
    try:
        tally = worker.run()
    finally:
        log.close()
    assert (tally.done, tally.dead_lettered) == (19, 1)
    assert [line for line, waited in written if waited] == []
    evs = [parse_line(line) for line, _waited in written]
    done = [e["task"] for e in evs if e["event"] == "done"]
    assert sorted(done) == sorted(ids[:4] + ids[5:])


@pytest.mark.parametrize("fast_ack", [True, False], ids=["fast-ack", "basic-ack"])
def test_a_warm_stop_mid_batch_acks_what_is_done_and_gives_back_the_rest(
    broker_url, queue, logs, monkeypatch, fast_ack
):
    ids = publish_bodies(broker_url, queue, [f"t{i}".encode() for i in range(20)])
    spy = AckSpy(monkeypatch, logs / "worker-b.log", first_batch=10)
    worker, log = batch_worker(broker_url, queue, logs, fast_ack=fast_ack)
    real_settle = worker._settler.settle

    def settle(decision, consumer, delivery, task_ids, last=False, later=False):
        real_settle(decision, consumer, delivery, task_ids, last, later)
        if delivery[0].delivery_tag == 3:
            worker.request_stop()  # as SIGTERM would, while tasks 1-3 wait for their ack

    monkeypatch.setattr(worker._settler, "settle", settle)
    try:
        tally = worker.run()
    finally:
        log.close()
    assert tally.done == 3 and tally.stop == "warm stop"
    assert spy.calls == [(3, True)] and spy.early == []
    evs = [(e["event"], e.get("task")) for e in events(logs / "worker-b.log")]
    assert [t for ev, t in evs if ev == "done"] == ids[:3]
    assert evs.index(("shutdown_warm", None)) > evs.index(("done", ids[2]))
    assert wait_for("17 tasks back", lambda: queue_counts(broker_url, queue) == (17, 0), WAIT)


@pytest.mark.parametrize("fast_ack", [True, False], ids=["fast-ack", "basic-ack"])
def test_acks_that_wait_when_the_connection_goes_are_each_logged_lost_and_remembered(
    broker_url, queue, logs, fast_ack
):
    ids = publish_bodies(broker_url, queue, [b"a", b"b", b"c"])
    settings = Settings(urls=(broker_url,), queue=queue)
    conn, _url = rabbitmq.connect(settings, client_name="test")
    consumer, _info = consume(conn, settings, prefetch=10, fast_ack=fast_ack)
    wait_for("3 deliveries", lambda: len(consumer.deliveries) >= 3 or consumer.pump(0.05))
    log = EventLog(logs / "worker-s.log", echo=False)
    settler = Settler(queue, "s", 3, log, WorkerTally())
    done = decide(Outcome.DONE, 1, "quorum", 3)
    first, second, third = (consumer.deliveries.popleft() for _ in range(3))
    settler.settle(done, consumer, first, {"task": ids[0]}, later=True)
    settler.settle(done, consumer, second, {"task": ids[1]}, later=True)
    assert settler.acks_waiting and settler.settled == 2
    conn.close()  # gone before the ack that would have covered all three
    with pytest.raises(ConnectionLost):
        settler.settle(done, consumer, third, {"task": ids[2]})
    log.close()
    assert [e["task"] for e in events(logs / "worker-s.log") if e["event"] == "ack_lost"] == ids
    assert settler.settled == 0 and not settler.acks_waiting
    # Should the broker hand them to this worker again, it acks them without running them.
    assert all(settler.finished_earlier(tid) for tid in ids)
    assert wait_for("all 3 back", lambda: queue_counts(broker_url, queue) == (3, 0))


# -- the worker's log file and terminal lines (no broker) -------------------------------------
def test_the_log_file_rotates_by_size_and_keeps_parseable_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog_log, "MAX_BYTES", 2000)
    path = tmp_path / "worker-r.log"
    log = EventLog(path, echo=False)
    try:
        for i in range(100):
            log.event("done", worker="r", task=f"run-{i}", row=i, run="run")
    finally:
        log.close()
    files = sorted(tmp_path.glob("worker-r.log*"))
    assert [f.name for f in files][:3] == ["worker-r.log", "worker-r.log.1", "worker-r.log.2"]
    assert all(f.stat().st_size < 2200 for f in files)
    lines = [ln for f in files for ln in f.read_text().splitlines()]
    assert all(parse_line(ln) for ln in lines)


def test_the_terminal_line_names_the_row_and_the_note_and_leaves_the_ids_to_the_log_file():
    fields = {"worker": "w1", "task": "r-3", "row": 3, "run": "r", "note": "warm stop (1 of 2)"}
    text = Terminal().line(now_iso(), "shutdown_warm", fields)
    assert text.endswith("shutdown_warm row 3     warm stop (1 of 2)")
    assert "w1" not in text and "r-3" not in text


def test_a_value_ending_in_a_newline_stays_on_its_line():
    line = format_event("done", task="t-1", output="ok\n")
    assert "\n" not in line and parse_line(line)["output"] == "ok\n"


# Bad options and odd bodies.


WORK_CASES = [
    ("negative-seconds-per-dot", ["--seconds-per-dot", "-1"], "--seconds-per-dot"),
    ("prefetch-zero", ["--prefetch", "0"], "--prefetch"),
    ("unknown-queue-type", ["--queue-type", "stream"], "--queue-type"),
    ("shell-without-exec", ["--shell"], "--shell"),
    ("max-attempts-zero", ["--max-attempts", "0"], "--max-attempts"),
    ("zero-task-timeout", ["--task-timeout", "0"], "--task-timeout"),
    ("zero-consumer-timeout", ["--consumer-timeout", "0"], "--consumer-timeout"),
]


@pytest.mark.parametrize(
    ("args", "phrase"), [c[1:] for c in WORK_CASES], ids=[c[0] for c in WORK_CASES]
)
def test_work_refuses_bad_options(offline_env, args, phrase):
    r = run("work", *args, env=offline_env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert phrase in r.stderr and no_traceback(r.stderr)


def test_the_worker_survives_huge_empty_and_binary_bodies(env, broker_url, queue, logs):
    """100,000 dots bounded by --task-timeout, a 0-byte body, and bytes that are not text."""
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    for n, body in enumerate([b"huge " + b"." * 100_000, b"", b"\xff\xfe\x00binary"], start=1):
        props = pika.BasicProperties(
            delivery_mode=2, message_id=f"odd-{n}", headers={"source-row": n}
        )
        ch.basic_publish("", queue, body, props)
    conn.close()
    r = run(
        "work",
        "--name",
        "odd",
        "--seconds-per-dot",
        "1",
        "--task-timeout",
        "1",
        "--max-attempts",
        "1",
        "--max-tasks",
        "3",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert no_traceback(r.stderr)
    evs = [
        (e["event"], e.get("task"), e.get("reason", "")) for e in events(logs / "worker-odd.log")
    ]
    assert ("done", "odd-2", "") in evs  # the empty body: zero dots, done
    dead = {t: why for ev, t, why in evs if ev == "dead_lettered"}
    assert set(dead) == {"odd-1", "odd-3"}
    assert "timed out" in dead["odd-1"] and "UTF-8" in dead["odd-3"]
    assert queue_ready(broker_url, f"{queue}.dead") == 2
