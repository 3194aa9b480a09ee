"""emit against the real broker: what lands in the queue, and what is refused."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers import (
    ROOT,
    declare_like_the_tutorial,
    drain,
    events,
    no_traceback,
    queue_counts,
    run,
    spawn,
    task_policy_of,
    wait_for_event,
)


def csv_lines() -> list[str]:
    return (ROOT / "tasks.csv").read_text().splitlines()


def test_emit_publishes_exactly_the_csv_rows_with_bodies_and_properties(
    emit_env, broker_url, queue, logs
):
    r = run("emit", "tasks.csv", env=emit_env)
    assert r.returncode == 0, r.stderr
    assert f"published 20 tasks to queue {queue}" in r.stdout
    assert "all confirmed" in r.stdout
    assert ":***@" in r.stdout and "guest:guest" not in r.stdout

    got = drain(broker_url, queue)
    lines = csv_lines()
    assert [body.decode() for _, _, body in got] == lines
    run_ids = {props.headers["run-id"] for _, props, _ in got}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    for n, (_, props, _) in enumerate(got, start=1):
        assert props.delivery_mode == 2
        assert props.content_type == "text/plain"
        assert props.content_encoding == "utf-8"
        assert props.message_id == f"{run_id}-{n}"
        assert props.headers["source-row"] == n
        assert props.headers["source-file"] == "tasks.csv"
        assert props.timestamp and props.timestamp > 1_700_000_000
    assert len({props.message_id for _, props, _ in got}) == 20

    done = [e for e in events(logs / "emitter.log") if e["event"] == "emit_done"]
    assert done and done[-1]["run"] == run_id and done[-1]["confirmed"] == "20"
    assert done[-1]["published_fast"] == ("20" if emit_env["EMIT_FAST_PATH"] == "1" else "0")


def test_emit_declares_a_durable_quorum_queue_by_default(env, broker_url, queue):
    assert run("emit", "--message", "x.", env=env).returncode == 0
    # Declared as the RabbitMQ tutorial declares it (a declaration with other arguments
    # would be refused), with its dead-letter settings from our policy ...
    declare_like_the_tutorial(broker_url, queue)
    policy = task_policy_of(broker_url, queue)
    assert policy is not None and policy["definition"]["dead-letter-routing-key"] == f"{queue}.dead"
    # ... and its dead-letter target is there to take what the broker gives up on.
    assert queue_counts(broker_url, f"{queue}.dead") == (0, 0)


def test_malformed_csv_publishes_no_rows(env, broker_url, queue, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text('Task 1 .\nTask 2 ..\n"Task 3 never closes\nTask 4 .\n')
    r = run("emit", str(bad), env=env)
    assert r.returncode == 2
    assert "bad.csv:3" in r.stderr and "quote" in r.stderr
    assert no_traceback(r.stderr)
    # nothing half-sent: the queue was never even declared
    assert run("emit", "--message", "probe", env=env).returncode == 0
    assert queue_counts(broker_url, queue)[0] == 1


def test_missing_csv_says_so_and_exits_2(offline_env):
    r = run("emit", "nope.csv", env=offline_env)
    assert r.returncode == 2
    assert "nope.csv: no such file" in r.stderr
    assert "hint:" in r.stderr and no_traceback(r.stderr)


# -- warnings before the surprise ---------------------------------------------------------------
def test_emit_with_no_worker_listening_says_so_and_how_to_start_one(env, queue, logs):
    r = run("emit", "--message", "Hello.", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("published 1 task to queue")  # one task, not "1 tasks"
    assert f"note: no worker is listening on queue {queue} yet" in r.stderr
    assert f"hint: start a worker in another terminal: work --queue {queue}" in r.stderr
    assert "warning:" not in r.stderr  # the queue was new: nothing was waiting in it
    started = [e for e in events(logs / "emitter.log") if e["event"] == "emit_started"]
    assert started[-1]["waiting"] == "0" and started[-1]["consumers"] == "0"


def test_emit_run_twice_says_how_many_tasks_were_already_waiting(env, queue):
    assert run("emit", "-m", "a .", "-m", "b .", env=env).returncode == 0
    again = run("emit", "-m", "a .", "-m", "b .", env=env)
    assert again.returncode == 0, again.stderr
    assert (
        f"warning: 2 tasks from before this run were already waiting in queue {queue}"
        in again.stderr
    )
    assert f"'tasks purge --queue {queue}' empties the queue" in again.stderr
    # --quiet hides the note about workers, never the warning.
    quiet = run("emit", "-m", "c .", "--quiet", env=env)
    assert quiet.returncode == 0
    assert quiet.stderr.startswith("warning: 4 tasks from before this run were already")
    assert "note:" not in quiet.stderr


def test_emit_with_a_worker_listening_gives_no_note_about_workers(env, queue, logs, tmp_path):
    w = spawn("work", "--name", "listening", env=env, out=tmp_path / "w.out")
    wait_for_event(logs / "worker-listening.log", "worker_ready", alive=w)
    r = run("emit", "--message", "no dots", env=env)
    assert r.returncode == 0, r.stderr
    assert "no worker is listening" not in r.stderr and "warning:" not in r.stderr
    wait_for_event(logs / "worker-listening.log", "done", alive=w)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0, w.output()
