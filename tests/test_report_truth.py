"""`tasks report` tells the truth mid-run, with other consumers, and with messages from other
tools; `tasks dead` shows bodies readably. Every test runs the real commands."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pika

from tests.helpers import (
    BIN,
    SPAWNED,
    Proc,
    declare_queue,
    events,
    queue_ready,
    run,
    spawn,
    wait_for,
    wait_for_event,
)
from tests.test_report import R1, done, line, started, write

#: The tutorial's worker.py, in short: prefetch 1, acks by hand. This one acks TAKE tasks,
#: then holds the next one without acking it (busy, as far as the broker can tell).
FOREIGN_WORKER = """
import sys, pika
url, queue, take = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.basic_qos(prefetch_count=1)
seen = []
def callback(ch, method, properties, body):
    seen.append(body)
    if len(seen) <= take:
        ch.basic_ack(delivery_tag=method.delivery_tag)
    print("acked" if len(seen) <= take else "holding", body.decode(), flush=True)
ch.basic_consume(queue=queue, on_message_callback=callback)
ch.start_consuming()
"""


def report(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run("tasks", "report", *args, env=env)


def report_json(env: dict[str, str], *args: str) -> tuple[int, dict]:
    r = report(env, "--json", *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def publish_like_the_tutorial(url: str, queue: str, *bodies: bytes, **props: object) -> None:
    """What the tutorial's new_task.py does: declare the quorum queue, publish persistent."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
        for body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **props))
    finally:
        conn.close()


def test_report_mid_run_is_in_progress_not_missing_and_says_what_to_do(
    env, broker_url, queue, logs, tmp_path
):
    w = spawn("work", "--name", "slow", "--seconds-per-dot", "1", env=env, out=tmp_path / "w")
    wait_for_event(logs / "worker-slow.log", "worker_ready", alive=w)
    shorts = [a for i in range(2, 6) for a in ("--message", f"short {i} .")]
    assert run("emit", "--message", "long " + "." * 120, *shorts, env=env).returncode == 0
    wait_for_event(logs / "worker-slow.log", "started", alive=w)

    r = report(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "run in progress: waiting 4, in progress 1, done 0" in r.stdout
    assert "0 missing" in r.stdout and "missing rows" not in r.stdout
    assert "next: 'tasks wait' returns once every task is done" in r.stdout
    code, doc = report_json(env)
    where = doc["runs"][0]["whereabouts"]
    assert code == 0 and doc["runs"][0]["audit"]["missing"] == []
    assert (where["judged_from"], where["waiting"], where["in_progress"]) == ("broker", 4, 1)
    assert where["running"] and where["queue"]["ready"] == 4 and where["queue"]["consumers"] == 1

    # Without the broker the report cannot tell waiting from lost, and says so in one line.
    gone = report(env, "--url", "amqp://guest:guest@localhost:1/%2F")
    assert gone.returncode == 1
    assert re.search(
        r"broker not reachable: .*localhost:1.*; judged from the logs alone", gone.stdout
    )
    assert "in progress, as the logs show: 1 task" in gone.stdout
    assert "missing rows: 2-5" in gone.stdout

    # The worker dies mid-task: its task goes back to the queue, and nobody consumes it.
    w.kill()
    wait_for("the long task back in the queue", lambda: queue_ready(broker_url, queue) == 5)
    r = report(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "run in progress: waiting 5, in progress 0, done 0" in r.stdout
    assert "next: no worker is consuming the queue: start one with 'work'" in r.stdout


def test_runs_sharing_a_queue_get_its_newest_messages_and_purged_tasks_are_missing(
    env, queue, logs, tmp_path
):
    source = tmp_path / "t.csv"
    source.write_text("".join(f"row {i} .\n" for i in range(1, 6)))
    assert run("emit", str(source), "--limit", "3", env=env).returncode == 0
    assert run("emit", str(source), "--start-row", "4", env=env).returncode == 0
    first, second = [  # in the order they were emitted (ids sort only to the second)
        e["run"] for e in events(logs / "emitter.log") if e["event"] == "emit_done"
    ]

    r = report(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"run {second}, the latest of 2 in {logs}/ (--all for every run" in r.stdout
    assert "run in progress: waiting 2, in progress 0, done 0" in r.stdout
    older = report(env, "--run", first)
    assert "run in progress: waiting 3, in progress 0, done 0" in older.stdout

    # Emptied by hand: the tasks are neither done, in the queue, in progress nor dead.
    assert run("tasks", "purge", "--yes", env=env).returncode == 0
    r = report(env, "--all")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "missing rows: 1-3 (neither done, in the queue, in progress nor dead-lettered)" in (
        r.stdout
    )
    assert "missing rows: 4-5 (neither done" in r.stdout
    assert f"'emit {source} --start-row 1 --limit 3'" in r.stdout
    assert f"'emit {source} --start-row 4 --limit 2'" in r.stdout


def test_tasks_taken_with_basic_get_are_said_to_be_taken_elsewhere_not_missing(
    env, broker_url, queue, logs, tmp_path
):
    bodies = [a for i in range(1, 5) for a in ("--message", f"task {i} .")]
    assert run("emit", *bodies, env=env).returncode == 0
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:  # what amqp-get does: basic.get, then ack
        ch = conn.channel()
        for _ in range(2):
            method, _props, _body = ch.basic_get(queue)
            ch.basic_ack(method.delivery_tag)
        r = run("work", "--name", "w", "--seconds-per-dot", "0", "--max-tasks", "2", env=env)
        assert r.returncode == 0, r.stderr

        def settled() -> tuple[int, dict] | None:
            got = report_json(env)
            return got if got[1]["runs"][0]["whereabouts"]["taken_elsewhere"] else None

        # The channel stays open until the broker's statistics have counted its gets: every
        # 2 minutes the broker forgets the counts of closed channels not yet collected (the
        # collection runs every 5 s), and a channel closed just before that is never counted.
        code, doc = wait_for("the broker to count the basic.get deliveries", settled, timeout=30)
    finally:
        conn.close()
    where = doc["runs"][0]["whereabouts"]
    assert code == 0 and doc["runs"][0]["audit"]["missing"] == []
    assert where["left_queue"] == [1, 2] and "deliveries" in where["evidence"]
    text = report(env)
    assert text.returncode == 0, text.stdout + text.stderr
    assert (
        "2 tasks left the queue without a done event in these logs: another consumer "
        "(the tutorial's worker.py, amqp-get) or a worker on another machine took them"
    ) in text.stdout


def test_a_foreign_consumer_on_the_queue_accounts_for_the_tasks_it_took(
    env, broker_url, queue, logs, tmp_path
):
    bodies = [a for i in range(1, 7) for a in ("--message", f"task {i} .")]
    assert run("emit", *bodies, env=env).returncode == 0
    out = tmp_path / "foreign.out"
    with open(out, "wb") as f:
        popen = subprocess.Popen(
            [sys.executable, "-c", FOREIGN_WORKER, broker_url, queue, "2"],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    foreign = Proc(popen, out)
    SPAWNED.append(foreign)
    wait_for(
        "the foreign worker to hold a task", lambda: "holding" in out.read_text(), alive=foreign
    )
    r = run("work", "--name", "ours", "--seconds-per-dot", "0", "--max-tasks", "3", env=env)
    assert r.returncode == 0, r.stderr

    r = report(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left the queue without a done event in these logs" in r.stdout
    assert "1 consumer (1 not a worker of these logs)" in r.stdout
    code, doc = report_json(env)
    where = doc["runs"][0]["whereabouts"]
    assert code == 0 and where["taken_elsewhere"] and where["queue"]["consumers_not_in_logs"] == 1
    # Rows 1 and 2 acked by it, row 3 held by it: the management API may not have counted
    # the held one as unacked yet, so it is either in progress elsewhere or gone with them.
    assert where["left_queue"][:2] == [1, 2]
    assert len(where["left_queue"]) + where["in_progress_elsewhere"] == 3
    # Without the management API, the consumer count over AMQP is the evidence.
    plain = report(env, "--management-url", "http://localhost:1/")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "the management API did not answer" in plain.stdout
    assert "3 tasks left the queue without a done event in these logs" in plain.stdout


def test_two_hello_world_messages_are_two_untracked_tasks_and_no_line_is_skipped(
    env, broker_url, queue, logs
):
    publish_like_the_tutorial(broker_url, queue, b"Hello World!", b"Hello World!")
    assert run("emit", "--message", "ours .", env=env).returncode == 0
    r = run("work", "--name", "u", "--seconds-per-dot", "0", "--max-tasks", "3", env=env)
    assert r.returncode == 0, r.stderr

    text = report(env)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "skipped" not in text.stderr, text.stderr
    assert (
        "untracked messages (published by other tools, with no run id): 2 deliveries, 2 done (u 2)"
    ) in text.stdout
    _code, doc = report_json(env)
    tasks = doc["untracked"]["tasks"]
    assert [t["body"] for t in tasks] == ["Hello World!", "Hello World!"]
    assert len({t["task"] for t in tasks}) == 2 and doc["skipped"] == []
    assert doc["runs"][0]["audit"]["done_once"] == [1]


def test_tasks_dead_shows_a_binary_body_escaped_once(env, broker_url, queue):
    publish_like_the_tutorial(broker_url, queue, b"\xff\xfe bin ..", message_id="poison-1")
    r = run("work", "--name", "p", "--seconds-per-dot", "0", "--max-tasks", "1", env=env)
    assert r.returncode == 0, r.stderr
    listed = run("tasks", "dead", env=env)
    assert listed.returncode == 0, listed.stderr
    assert r"body: '\xff\xfe bin ..'" in listed.stdout
    assert r"\\x" not in listed.stdout


# -- figures and the timeline, on logs written for the purpose (no broker) ------------------


def _offline(*args: str) -> subprocess.CompletedProcess[str]:
    return run("tasks", "report", "--logs-only", *args, env=dict(os.environ))


def test_makespan_counts_every_worker_in_the_table_and_ratios_are_multiples(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    write(d / "emitter.log", [line(0, "emit_done", run=R1, rows="1-3", total=3, order="file")])
    write(d / "worker-a.log", [started(0, "a", R1, 1), done(2, "a", R1, 1, 2.0)])
    write(d / "worker-b.log", [started(0, "b", R1, 2), done(1, "b", R1, 2, 1.0)])
    # c took row 3 and was killed; b did it again.
    write(d / "worker-c.log", [started(0, "c", R1, 3)])
    write(
        d / "worker-b.log",
        [
            *(d / "worker-b.log").read_text().splitlines(),
            started(1, "b", R1, 3, True),
            done(3, "b", R1, 3, 2.0),
        ],
    )
    r = _offline(str(d))
    assert r.returncode == 0, r.stdout + r.stderr
    table = [x for x in r.stdout.splitlines() if re.match(r"^[abc] +\d", x)]
    assert len(table) == 3
    assert "makespan 3.00 s with 3 workers (2 finished tasks: the schedules are for 2)" in r.stdout
    assert re.search(
        r"fair dispatch: \d\.\d\d\N{MULTIPLICATION SIGN} the greedy schedule", r.stdout
    )
    assert "within" not in r.stdout and "%" not in r.stdout.split("makespan")[1]


def test_utilisation_is_measured_against_each_workers_own_time_in_the_run(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    write(d / "emitter.log", [line(0, "emit_done", run=R1, rows="1-4", total=4, order="file")])
    # early: ready before the run, busy 0-10, stopped at 12. late: joined at 20, busy
    # 20-40. full: ready before the run, busy 0-40.
    write(
        d / "worker-early.log",
        [
            line(-5, "worker_ready", worker="early", queue="q"),
            started(0, "early", R1, 1),
            done(10, "early", R1, 1, 10.0),
            line(12, "worker_stopped", worker="early"),
        ],
    )
    write(
        d / "worker-late.log",
        [
            line(20, "worker_ready", worker="late", queue="q"),
            started(20, "late", R1, 2),
            done(40, "late", R1, 2, 20.0),
        ],
    )
    write(
        d / "worker-full.log",
        [
            line(-1, "worker_ready", worker="full", queue="q"),
            started(0, "full", R1, 3),
            done(20, "full", R1, 3, 20.0),
            started(20, "full", R1, 4),
            done(40, "full", R1, 4, 20.0),
        ],
    )
    r = _offline(str(d), "--json")
    assert r.returncode == 0, r.stderr
    workers = {w["name"]: w for w in json.loads(r.stdout)["runs"][0]["workers"]}
    assert {n: w["own_seconds"] for n, w in workers.items()} == {
        "early": 12.0,
        "late": 20.0,
        "full": 40.0,
    }
    assert workers["early"]["utilisation"] == round(10 / 12, 4)
    assert workers["late"]["utilisation"] == 1.0 and workers["full"]["utilisation"] == 1.0
    text = _offline(str(d)).stdout
    assert re.search(r"^early +1 +10\.00 +83% ", text, re.M)


def test_text_timeline_never_cuts_a_row_number_and_marks_a_cold_stop(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    write(d / "emitter.log", [line(0, "emit_done", run=R1, rows="1-14", total=14, order="file")])
    write(
        d / "worker-one.log",
        [
            started(0, "one", R1, 14),
            done(1, "one", R1, 14, 1.0),
            started(1, "one", R1, 2),
            done(60, "one", R1, 2, 59.0),
        ],
    )
    write(
        d / "worker-two.log",
        [
            started(0.1, "two", R1, 5),
            line(0.3, "requeued", worker="two", task=f"{R1}-5", row=5, run=R1, seconds=0.2),
            started(1, "two", R1, 7),
            line(8, "requeued", worker="two", task=f"{R1}-7", row=7, run=R1, seconds=7.0),
            started(8, "two", R1, 6),
            done(50, "two", R1, 6, 42.0),
        ],
    )
    r = _offline(str(d), "--run", R1, "--timeline", "-")
    lanes = {x.split()[0]: x for x in r.stdout.splitlines() if x.startswith(("one ", "two "))}
    # Row 14 took one column: a letter named in the key, never "|1".
    assert lanes["one"].startswith("one a|2===")
    assert not re.search(r"\|1(?!4)", lanes["one"])
    assert "a = row 14 (done, 1.00 s)" in r.stdout
    # The cold stop of row 5 after 0.2 s is a letter too; the longer one of row 7 shows ~.
    assert lanes["two"].startswith("two b|7~~~~")
    assert "b = row 5 (given back by a cold stop, 0.20 s)" in r.stdout
    assert "~ given back by a cold stop" in r.stdout


def test_rows_not_seen_while_emit_has_not_finished_may_be_unpublished_not_missing(env, queue, logs):
    # emit logged its start (5 rows) and nothing more yet; a worker did row 1.
    declare_queue(env["AMQP_URL"], queue)  # emit declares it before its first line
    begun = line(0, "emit_started", run=R1, source="t.csv", queue=queue, order="file", total=5)
    write(logs / "emitter.log", [begun])
    write(logs / "worker-a.log", [started(0, "a", R1, 1), done(1, "a", R1, 1, 1.0)])
    r = report(env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[emit running]" in r.stdout and "0 missing" in r.stdout
    assert "emit has not logged its end: 4 tasks not seen yet may not be published yet" in (
        r.stdout
    )
    _code, doc = report_json(env)
    assert doc["runs"][0]["whereabouts"]["unpublished"] == 4


def test_the_latest_run_is_the_last_emitted_even_within_one_second(tmp_path):
    # Run ids sort by time only to the second; their random suffixes do not.
    d = tmp_path / "logs"
    d.mkdir()
    first, second = "20260101T120000-ffff", "20260101T120000-0000"
    write(
        d / "emitter.log",
        [
            line(0.1, "emit_done", run=first, queue="q", rows="1-1", total=1),
            line(0.6, "emit_done", run=second, queue="q", rows="1-1", total=1),
        ],
    )
    write(d / "worker-a.log", [started(0.2, "a", first, 1), done(0.3, "a", first, 1, 0.1)])
    r = _offline(str(d))
    assert f"run {second}, the latest of 2 in {d}/" in r.stdout


def test_on_an_80_column_terminal_the_report_wraps_prose_at_words(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    write(
        d / "emitter.log",
        [line(0, "emit_done", run=R1, source="a-long-file-name.csv", rows="1-30", total=30)],
    )
    write(d / "worker-a.log", [started(0, "a", R1, 1), done(1, "a", R1, 1, 1.0)])
    args = [str(BIN / "tasks"), "report", "--logs-only", str(d)]
    piped = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ)).stdout
    assert max(len(x) for x in piped.splitlines()) > 80  # through a pipe, lines stay whole

    main, child = pty.openpty()  # a terminal, as a person sees the report
    try:
        proc = subprocess.run(
            args, stdout=child, stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "80"}
        )
        os.close(child)
        out = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child side is closed and everything was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main)
    text = out.decode().replace("\r\n", "\n")
    assert proc.returncode == 1
    assert max(len(x) for x in text.splitlines()) <= 80, text
    # The missing rows are ranges (issue 23); the resend hint wraps at words, never inside
    # an option or a number.
    assert "missing rows: 2-30" in text and re.search(r"--start-row 2\n +--limit 29", text)
