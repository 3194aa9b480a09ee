"""A worker under faults: broker restarts, connections closed by the broker, and signals."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

from inspector.analysis import summarise_run
from inspector.runs import latest_run, read_logs
from tests.helpers import events, queue_counts, run, spawn, wait_for, wait_for_event


def names(log: Path) -> list[str]:
    return [e["event"] for e in events(log)]


def test_broker_restart_mid_run_three_workers_reconnect_and_every_task_is_done(
    make_node, env, logs, tmp_path
):
    node = make_node()
    env = {**env, "AMQP_URL": node.url}
    workers = [
        spawn(
            "work",
            # Tasks long enough (15 s for the three) that the node is surely stopped mid-run,
            # however long rabbitmqctl takes to start on a loaded machine; idle from the
            # moment it is ready, so time enough for emit to start too.
            *("--name", f"w{i}", "--seconds-per-dot", "0.5", "--exit-when-idle", "10"),
            env=env,
            out=tmp_path / f"w{i}.out",
        )
        for i in (1, 2, 3)
    ]
    for i, w in enumerate(workers, start=1):
        wait_for_event(logs / f"worker-w{i}.log", "worker_ready", alive=w)
    assert run("emit", "tasks.csv", env=env).returncode == 0
    # Mid-run: some tasks done, most still queued or in the workers' hands.
    wait_for(
        "3 tasks done",
        lambda: sum(names(logs / f"worker-w{i}.log").count("done") for i in (1, 2, 3)) >= 3,
    )
    node.stop()
    for i, w in enumerate(workers, start=1):
        wait_for_event(logs / f"worker-w{i}.log", "connection_lost", alive=w)
    node.start()
    for i, w in enumerate(workers, start=1):
        wait_for_event(logs / f"worker-w{i}.log", "reconnected", alive=w)
    for w in workers:
        assert w.wait() == 0, w.output()
    # The restart really was mid-run: tasks were still started after reconnecting.
    after = [
        ev[ev.index("reconnected") :].count("done")
        for ev in (names(logs / f"worker-w{i}.log") for i in (1, 2, 3))
    ]
    assert sum(after) > 0
    audit = summarise_run(latest_run(read_logs(logs))).audit
    assert audit.missing == [] and audit.dead == []
    assert sorted(audit.once + [d.row for d in audit.duplicates]) == list(range(1, 21))
    assert queue_counts(node.url, env["TASK_QUEUE"]) == (0, 0)


def test_connection_closed_by_the_broker_mid_task_is_said_plainly_and_the_task_gets_done(
    make_node, work_env, logs, tmp_path
):
    node = make_node()
    env = {**work_env, "AMQP_URL": node.url}
    # The task runs until the test lets it finish, so the close surely comes mid-task
    # however long rabbitmqctl takes to start on a busy machine.
    go = tmp_path / "go"
    until_go = f"sh -c {shlex.quote(f'until [ -e {shlex.quote(str(go))} ]; do sleep 0.05; done')}"
    w = spawn(
        "work",
        *("--name", "k", "--exec", until_go, "--max-tasks", "1"),
        env=env,
        out=tmp_path / "k.out",
    )
    log = logs / "worker-k.log"
    wait_for_event(log, "worker_ready", alive=w)
    assert run("emit", "--message", "long ....", env=env).returncode == 0
    wait_for_event(log, "started", alive=w)
    node.ctl("close_all_connections", "test closes it")
    lost = wait_for_event(log, "connection_lost", alive=w)[0]
    go.touch()
    assert "operator closed the connection" in lost["reason"] and lost["row"] == "1"
    assert w.wait() == 0, w.output()
    evs = names(log)
    assert "ack_lost" in evs and "reconnected" in evs
    done = [e for e in events(log) if e["event"] == "done"]
    # It ran once; the broker's redelivered copy was acked without running it again,
    # and the report shows both lines (a duplicate is never hidden).
    assert len(done) == 2 and "acked this copy without running it again" in done[1]["note"]
    assert evs.count("started") == 2
    assert [e["redelivered"] for e in events(log) if e["event"] == "started"] == [
        "false",
        "true",
    ]
    audit = summarise_run(latest_run(read_logs(logs))).audit
    assert audit.missing == [] and [d.row for d in audit.duplicates] == [1]
    assert queue_counts(node.url, env["TASK_QUEUE"]) == (0, 0)


def test_sigterm_mid_task_is_a_warm_stop_that_finishes_and_acks_it(
    env, broker_url, queue, logs, tmp_path
):
    w = spawn("work", "--name", "t", "--seconds-per-dot", "0.3", env=env, out=tmp_path / "t.out")
    log = logs / "worker-t.log"
    wait_for_event(log, "worker_ready", alive=w)
    assert run("emit", "--message", "finish me ...", "--message", "later", env=env).returncode == 0
    wait_for_event(log, "started", alive=w)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0, w.output()
    warm = [e for e in events(log) if e["event"] == "shutdown_warm"]
    assert len(warm) == 1 and warm[0]["row"] == "1" and "warm stop (1 of 2)" in warm[0]["note"]
    assert names(log).count("done") == 1
    assert "warm stop (1 of 2)" in w.output() and "(warm stop)" in w.output()
    assert queue_counts(broker_url, queue) == (1, 0)


def test_double_sigint_is_a_cold_stop_and_another_worker_does_the_redelivered_task(
    env, broker_url, queue, logs, tmp_path
):
    a = spawn("work", "--name", "a", "--seconds-per-dot", "5", env=env, out=tmp_path / "a.out")
    log = logs / "worker-a.log"
    wait_for_event(log, "worker_ready", alive=a)
    assert run("emit", "--message", "long ....", env=env).returncode == 0
    wait_for_event(log, "started", alive=a)
    a.signal(signal.SIGINT)
    wait_for_event(log, "shutdown_warm", alive=a)
    a.signal(signal.SIGINT)
    assert a.wait() == 130, a.output()
    cold = [e for e in events(log) if e["event"] == "shutdown_cold"]
    assert len(cold) == 1 and cold[0]["row"] == "1" and "cold stop (2 of 2)" in cold[0]["note"]
    assert "done" not in names(log) and "requeued" in names(log)
    assert queue_counts(broker_url, queue) == (1, 0)
    r = run("work", "--name", "b", "--seconds-per-dot", "0", "--max-tasks", "1", env=env)
    assert r.returncode == 0, r.stderr
    started = [e for e in events(logs / "worker-b.log") if e["event"] == "started"]
    assert len(started) == 1 and started[0]["redelivered"] == "true"
    assert names(logs / "worker-b.log").count("done") == 1
    audit = summarise_run(latest_run(read_logs(logs))).audit
    assert audit.missing == [] and audit.once == [1]


def test_a_reconnecting_worker_consumes_at_once_without_declaring_the_queue_again(
    make_node, work_env, logs, tmp_path
):
    """A reconnect consumes the queue its first connection found, with no declaration (a
    RabbitMQ 4 node may leave one unanswered for minutes after a quorum queue's leader is
    lost). Seen for real: once the worker's user may no longer configure the queue, a
    declaration is refused (403), yet the worker reconnects and goes on working."""
    node = make_node()
    queue = work_env["TASK_QUEUE"]
    node.ctl("add_user", "operator", "secret-pw")
    ours = f"^{queue}(\\.dead)?$"
    write = f"^({queue}(\\.dead)?|amq\\.default)$"  # a copy goes by the default exchange
    node.ctl("set_permissions", "-p", "/", "operator", ours, write, ours)
    env = {
        **work_env,
        "AMQP_URL": f"amqp://operator:secret-pw@localhost:{node.port}/%2F",
        "TASK_EVENTS": "0",
    }
    w = spawn("work", "--name", "r", "--max-tasks", "1", env=env, out=tmp_path / "r.out")
    log = logs / "worker-r.log"
    wait_for_event(log, "worker_ready", alive=w)
    # It may still read and write the queue, but no longer declare it.
    node.ctl("set_permissions", "-p", "/", "operator", "^$", write, ours)
    node.ctl("close_all_connections", "test closes it")
    wait_for_event(log, "reconnected", alive=w)
    assert run("emit", "--message", "after .", env={**env, "AMQP_URL": node.url}).returncode == 0
    assert w.wait() == 0, w.output()
    assert [e["event"] for e in events(log) if e["event"] in ("done", "reconnect_failed")] == [
        "done"
    ]
    assert queue_counts(node.url, queue) == (0, 0)
