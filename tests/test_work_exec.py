"""--exec, retries, dead letters and `tasks dead`, as real processes on the real broker."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pika
import pytest

from tests.helpers import drain, events, queue_counts, run, spawn, wait_for_event
from utils.task import Task
from worker.handlers import DotSleep, RunCommand, TaskFailed

#: A handler for --exec that acts on the start of the body (read from stdin), and checks
#: that TASK_BODY says the same.
HANDLER = """\
import os, sys, time
body = sys.stdin.read()
assert os.environ["TASK_BODY"] == body, "TASK_BODY differs from stdin"
if body.startswith("fail"):
    print("failing as asked", flush=True)
    sys.exit(1)
if body.startswith("slow"):
    time.sleep(60)
print(f"ok row={os.environ['TASK_ROW']} attempt={os.environ['TASK_ATTEMPT']} body={body}")
"""


def test_exec_without_shell_passes_the_body_as_data_and_fails_on_non_zero_exit(tmp_path):
    task = Task("a; touch x $(touch y)", "t-1", 1, "r")
    out = RunCommand("cat")(task, threading.Event())
    assert out == "a; touch x $(touch y)"
    with pytest.raises(TaskFailed, match="exited with code 3"):
        RunCommand("sh -c 'exit 3'")(task, threading.Event())
    assert DotSleep(1.0).is_instant(Task("no dots", "t-2")) is True
    assert DotSleep(1.0).is_instant(Task("one.", "t-3")) is False


def task_events(log: Path, event: str) -> list[dict[str, str]]:
    return [e for e in events(log) if e["event"] == event]


def test_exec_acks_exit_0_dead_letters_exit_1_and_timeouts_and_keeps_bodies_inert(
    env, broker_url, queue, logs, tmp_path
):
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    trap = tmp_path / "trap"
    # Every way a shell would run something; without --shell it is only data.
    nasty = (
        f"ok; touch {trap}1 && echo $(touch {trap}2) `touch {trap}3` | tee {trap}4 "
        f"> {trap}5 & rm -rf {trap}6 \"'$HOME\\ *"
    )
    assert (
        run(
            "emit",
            *("--message", "ok plain"),
            *("--message", "fail always"),
            *("--message", "slow task"),
            *("--message", nasty),
            env=env,
        ).returncode
        == 0
    )
    r = run(
        "work",
        *("--name", "x", "--exec", f"{sys.executable} {handler}"),
        *("--task-timeout", "1", "--max-attempts", "1", "--max-tasks", "4"),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    log = logs / "worker-x.log"
    done = {e["row"]: e for e in task_events(log, "done")}
    assert set(done) == {"1", "4"}
    assert done["1"]["output"].strip() == "ok row=1 attempt=1 body=ok plain"
    assert done["4"]["output"].strip() == f"ok row=4 attempt=1 body={nasty}"
    assert not list(tmp_path.glob("trap*")), "a task body was run by a shell"
    failed = {e["row"]: e["reason"] for e in task_events(log, "failed")}
    assert failed["2"].startswith("command exited with code 1")
    assert "failing as asked" in failed["2"]
    assert failed["3"] == "timed out after 1 s"
    dead = {e["row"] for e in task_events(log, "dead_lettered")}
    assert dead == {"2", "3"}
    # The summary line counts them, and the dead letters carry the reason.
    assert "2 done, 2 failed, 2 dead-lettered" in r.stderr
    reasons = {
        p.headers["source-row"]: p.headers["x-failure-reason"]
        for _m, p, _b in drain(broker_url, f"{queue}.dead")
    }
    assert reasons[2].startswith("failed 1 time; last: command exited with code 1")
    assert "timed out after 1 s" in reasons[3]
    assert queue_counts(broker_url, queue) == (0, 0)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_task_failing_twice_is_acked_on_attempt_3_and_one_always_failing_is_dead_lettered(
    env, broker_url, queue, logs, tmp_path, queue_type
):
    env = {**env, "TASK_QUEUE_TYPE": queue_type}
    # Row 1 succeeds on its third attempt; row 2 never does.
    script = 'case "$TASK_BODY" in flaky*) test "$TASK_ATTEMPT" -ge 3;; *) exit 3;; esac'
    w = spawn(
        "work",
        *("--name", "r", "--exec", script, "--shell", "--max-attempts", "3"),
        # Idle from the moment it is ready: time enough for emit to start on a loaded machine.
        *("--exit-when-idle", "10"),
        env=env,
        out=tmp_path / "r.out",
    )
    wait_for_event(logs / "worker-r.log", "worker_ready", alive=w, queue_type=queue_type)
    assert run("emit", "--message", "flaky", "--message", "doomed", env=env).returncode == 0
    assert w.wait() == 0, w.output()
    log = logs / "worker-r.log"
    by_row: dict[str, list[str]] = {}
    for e in events(log):
        if "task" in e:
            # Every event about a task names the task, its row and its run.
            assert e.get("row") and e.get("run"), e
            by_row.setdefault(e["row"], []).append(f"{e['event']}:{e.get('attempt', '')}")
    assert by_row["1"] == [
        "started:1", "failed:1", "retry:2",
        "started:2", "failed:2", "retry:3",
        "started:3", "done:3",
    ]  # fmt: skip
    assert by_row["2"] == [
        "started:1", "failed:1", "retry:2",
        "started:2", "failed:2", "retry:3",
        "started:3", "failed:3", "dead_lettered:",
    ]  # fmt: skip
    assert queue_counts(broker_url, queue) == (0, 0)
    dead = drain(broker_url, f"{queue}.dead")
    assert [b for _m, _p, b in dead] == [b"doomed"]
    assert dead[0][1].headers["x-failure-reason"] == (
        "failed 3 times; last: command exited with code 3"
    )


def test_poison_message_goes_to_the_dead_letter_queue_and_the_worker_goes_on(
    env, broker_url, queue, logs
):
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", queue, b"bad \xff\xfe bytes", pika.BasicProperties(message_id="poison-1"))
    conn.close()
    assert run("emit", "--message", "good one.", env=env).returncode == 0
    r = run("work", "--name", "p", "--seconds-per-dot", "0", "--max-tasks", "2", env=env)
    assert r.returncode == 0, r.stderr
    evs = events(logs / "worker-p.log")
    dl = [e for e in evs if e["event"] == "dead_lettered"]
    assert [e["task"] for e in dl] == ["poison-1"]
    # Then it went on to the next task.
    after = [e for e in evs if e.get("task") not in (None, "poison-1")]
    assert [e["event"] for e in after] == ["started", "done"]
    assert after[0]["body"] == "good one."
    dead = drain(broker_url, f"{queue}.dead")
    assert [b for _m, _p, b in dead] == [b"bad \xff\xfe bytes"]
    assert "not valid UTF-8" in dead[0][1].headers["x-failure-reason"]
    assert queue_counts(broker_url, queue) == (0, 0)


def test_tasks_dead_lists_without_consuming_and_requeue_sends_them_back_afresh(
    env, broker_url, queue, logs
):
    assert run("emit", "--message", "first", "--message", "second", env=env).returncode == 0
    r = run(
        "work", "--name", "d", "--exec", "false", "--max-attempts", "1", "--max-tasks", "2", env=env
    )
    assert r.returncode == 0, r.stderr
    for _ in range(2):  # listing twice shows the same: nothing was taken away
        listed = run("tasks", "dead", env=env)
        assert listed.returncode == 0, listed.stderr
        assert "2 dead letters" in listed.stdout
        assert "row 1 " in listed.stdout and "row 2 " in listed.stdout
        assert "command exited with code 1" in listed.stdout and "'second'" in listed.stdout
    assert queue_counts(broker_url, f"{queue}.dead")[0] == 2
    moved = run("tasks", "dead", "--requeue", env=env)
    assert moved.returncode == 0, moved.stderr
    assert "moved 2 dead letters back" in moved.stdout
    assert queue_counts(broker_url, f"{queue}.dead")[0] == 0
    back = drain(broker_url, queue)
    assert sorted(b for _m, _p, b in back) == [b"first", b"second"]
    for _m, p, _b in back:
        assert "x-failure-reason" not in p.headers and "x-attempt" not in p.headers
        assert p.message_id.endswith(("-1", "-2")) and p.delivery_mode == 2
    assert "no dead letters" in run("tasks", "dead", env=env).stdout
