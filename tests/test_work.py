"""Workers as real processes against the real broker."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pika

from inspector.analysis import summarise_run, worker_rows
from inspector.runs import latest_run, read_logs
from inspector.schedule import greedy
from tests.helpers import (
    ROOT,
    events,
    queue_counts,
    run,
    spawn,
    stop_when_done,
    wait_for_event,
)


def start_workers(env, logs: Path, tmp_path: Path, n: int, *args: str):
    procs = []
    for i in range(1, n + 1):
        p = spawn("work", "--name", f"w{i}", *args, env=env, out=tmp_path / f"w{i}.out")
        procs.append(p)
    for i, p in enumerate(procs, start=1):
        wait_for_event(logs / f"worker-w{i}.log", "worker_ready", alive=p)
    return procs


def test_three_workers_share_the_tasks_and_each_is_done_exactly_once(env, logs, tmp_path):
    procs = start_workers(env, logs, tmp_path, 3, "--seconds-per-dot", "0.01")
    assert run("emit", "tasks.csv", env=env).returncode == 0
    stop_when_done(procs, logs, 20)
    summary = summarise_run(latest_run(read_logs(logs)))
    assert summary.audit.missing == [] and summary.audit.duplicates == []
    assert sorted(summary.audit.once) == list(range(1, 21))
    per_worker = worker_rows(summary)
    assert set(per_worker) == {"w1", "w2", "w3"}
    assert all(per_worker.values())


def tie_margin(dots: list[int], workers: int) -> float:
    """The smallest gap, over every dispatch, between the first and second free worker."""
    free = [0.0] * workers
    gap = float("inf")
    for i, d in enumerate(dots):
        free.sort()
        if i >= workers:
            gap = min(gap, free[1] - free[0])
        free[0] += d
    return gap


def test_who_got_what_matches_the_greedy_schedule_of_fair_dispatch(env, logs, tmp_path):
    dots = [5, 3, 1, 1, 4, 8, 3, 1, 7, 4, 6, 2]
    spd = 0.1
    plan = greedy([d * spd for d in dots], 3)
    # Precondition: whenever a task is handed out after the first three, the first free
    # worker is free a whole dot (0.1 s) before the next one, so the schedule has one
    # clear answer and no coin tosses.
    assert tie_margin(dots, 3) >= 1
    expected = {frozenset(i + 1 for i, w in enumerate(plan.assignment) if w == k) for k in range(3)}
    procs = start_workers(env, logs, tmp_path, 3, "--seconds-per-dot", str(spd))
    bodies = [f"Task {i:02d} " + "." * d for i, d in enumerate(dots, start=1)]
    args = [a for b in bodies for a in ("--message", b)]
    assert run("emit", *args, env=env).returncode == 0
    stop_when_done(procs, logs, len(dots))
    got = {
        frozenset(rows) for rows in worker_rows(summarise_run(latest_run(read_logs(logs)))).values()
    }
    assert got == expected


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


def test_readme_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
