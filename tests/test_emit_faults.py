"""emit when the broker misbehaves: restarts, stays down, loses the queue, nacks, blocks.

The test feeds rows through emit's stdin, so it decides when the broker goes down relative
to the rows, and waits on queue counts and emitter log events, never on fixed sleeps.
"""

from __future__ import annotations

import subprocess
from collections import Counter

import pika
import pytest

from tests.helpers import (
    BIN,
    ROOT,
    StdinEmit,
    drain,
    events,
    no_traceback,
    queue_counts,
    wait_for,
    wait_for_event,
)


def rows(first: int, last: int) -> list[str]:
    return [f"Task {n} {'.' * (n % 3 + 1)}" for n in range(first, last + 1)]


def count_is(url: str, queue: str, n: int) -> bool:
    """True once the queue holds n messages (False until it exists and the broker answers)."""
    try:
        return queue_counts(url, queue)[0] == n
    except (pika.exceptions.AMQPError, OSError):  # not declared yet, or the broker is down
        return False


def test_a_broker_restart_mid_emit_loses_no_row_and_duplicates_keep_their_id(
    make_node, emit_env, tmp_path, logs
):
    node = make_node()
    env = {**emit_env, "AMQP_URL": node.url}
    queue = env["TASK_QUEUE"]
    emit = StdinEmit(env=env, out=tmp_path / "emit.out")
    emit.feed(rows(1, 50))
    wait_for("the first 50 rows in the queue", lambda: count_is(node.url, queue, 50))

    # A memory alarm makes the broker stop reading publishes: rows 51-60 go out and stay
    # unconfirmed, so the restart below is sure to catch rows in flight.
    node.ctl("set_vm_memory_high_watermark", "0.000001")
    emit.feed(rows(51, 60))
    wait_for_event(logs / "emitter.log", "blocked")
    node.stop()  # the alarm setting does not survive the restart
    lost = wait_for_event(logs / "emitter.log", "connection_lost")[0]
    assert int(lost["unconfirmed"]) >= 1
    emit.feed(rows(61, 100))  # read while the broker is down, published once it is back
    emit.close_input()
    node.start()

    assert emit.wait() == 0, emit.output()
    assert "published 100 tasks" in emit.output() and "all confirmed" in emit.output()
    assert "note: connection lost" in emit.output() and "note: reconnected" in emit.output()
    got = drain(node.url, queue)
    by_id: dict[str, set[str]] = {}
    for _, props, body in got:
        by_id.setdefault(props.message_id, set()).add(body.decode())
    run_id = got[0][1].headers["run-id"]
    assert sorted(by_id) == sorted(f"{run_id}-{n}" for n in range(1, 101))
    # a row sent twice is the same message twice: same id, same body
    assert all(len(b) == 1 for b in by_id.values())
    assert sorted(b.pop() for b in by_id.values()) == sorted(rows(1, 100))
    duplicates = sum(Counter(p.message_id for _, p, _ in got).values()) - 100
    done = [e for e in events(logs / "emitter.log") if e["event"] == "emit_done"][-1]
    assert int(done["republished"]) >= max(duplicates, int(lost["unconfirmed"]))
    assert [e["event"] for e in events(logs / "emitter.log")].count("reconnected") == 1


def test_a_broker_that_stays_down_exits_3_with_the_row_to_resume_from(
    make_node, env, tmp_path, logs
):
    node = make_node()
    env = {**env, "AMQP_URL": node.url}
    queue = env["TASK_QUEUE"]
    # --retry-for leaves room to feed rows 6-10 after the connection is lost, on a loaded
    # machine too (at 3 s, CI on RabbitMQ 4.0 once saw emit give up first: a broken pipe).
    emit = StdinEmit("--retry-for", "20", env=env, out=tmp_path / "emit.out")
    emit.feed(rows(1, 5))
    wait_for("rows 1-5 in the queue", lambda: count_is(node.url, queue, 5))
    node.stop()
    wait_for_event(logs / "emitter.log", "connection_lost")
    emit.feed(rows(6, 10))
    emit.close_input()

    assert emit.wait() == 3
    resume = "confirmed rows 1..5 of 10; rerun with --start-row 6"
    out = emit.output()
    assert "error: the broker did not come back within 20 s; " + resume in out
    assert "hint:" in out and no_traceback(out)
    failed = [e for e in events(logs / "emitter.log") if e["event"] == "emit_failed"][-1]
    assert failed["resume"] == resume and failed["confirmed"] == "5"

    # The rerun from the row it named completes the set, each row once.
    node.start()
    csv = tmp_path / "all.csv"
    csv.write_text("".join(f"{r}\n" for r in rows(1, 10)))
    rerun = subprocess.run(
        [str(BIN / "emit"), str(csv), "--start-row", "6"], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    got = drain(node.url, queue)
    assert sorted(b.decode() for _, _, b in got) == sorted(rows(1, 10))
    assert [p.headers["source-row"] for _, p, _ in got] == list(range(1, 11))


def test_a_queue_deleted_mid_run_is_reported_as_unroutable_rows(
    env, broker_url, queue, tmp_path, logs
):
    emit = StdinEmit(env=env, out=tmp_path / "emit.out")
    emit.feed(rows(1, 5))
    wait_for("rows 1-5 in the queue", lambda: count_is(broker_url, queue, 5))
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    conn.channel().queue_delete(queue)
    conn.close()
    emit.feed(rows(6, 8))
    emit.close_input()

    assert emit.wait() == 3
    out = emit.output()
    assert "3 tasks could not be routed to the queue (rows 6, 7, 8)" in out
    assert "confirmed rows 1..5 of 8; rerun with --start-row 6" in out
    assert no_traceback(out) and "published 8 tasks" not in out
    failed = [e for e in events(logs / "emitter.log") if e["event"] == "emit_failed"][-1]
    assert failed["unroutable"] == "3"


def test_nacked_rows_are_republished_a_few_times_then_reported(
    emit_env, broker_url, queue, tmp_path, logs
):
    # A full queue that rejects publishes makes the broker nack them.
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    conn.channel().queue_declare(
        queue,
        durable=True,
        arguments={"x-max-length": 3, "x-overflow": "reject-publish"},
    )
    conn.close()
    csv = tmp_path / "t.csv"
    csv.write_text("".join(f"{r}\n" for r in rows(1, 5)))
    r = subprocess.run(
        [str(BIN / "emit"), str(csv)], env=emit_env, capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 3
    assert "the broker refused 2 tasks (rows 4, 5) after 3 republishes each" in r.stderr
    assert "confirmed rows 1..3 of 5; rerun with --start-row 4" in r.stderr
    assert "x-max-length" in r.stderr and no_traceback(r.stderr)
    failed = [e for e in events(logs / "emitter.log") if e["event"] == "emit_failed"][-1]
    assert failed["nacked"] == "2" and failed["republished"] == "6"
    assert sorted(b.decode() for _, _, b in drain(broker_url, queue)) == rows(1, 3)


def test_a_blocking_broker_is_reported_waited_for_and_given_up_on(make_node, env, tmp_path, logs):
    # A 1-byte memory watermark: the broker blocks every publishing connection at once.
    node = make_node(extra_conf="vm_memory_high_watermark.absolute = 1")
    env = {**env, "AMQP_URL": node.url}
    queue = env["TASK_QUEUE"]

    gave_up = subprocess.run(
        [str(BIN / "emit"), "-m", "a .", "-m", "b .", "--blocked-timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert gave_up.returncode == 3
    assert "note: the broker is blocking publishers (low on memory)" in gave_up.stderr
    assert "the broker blocked publishing for over 1 s (a memory or disk alarm)" in gave_up.stderr
    assert "no messages confirmed of 2" in gave_up.stderr and no_traceback(gave_up.stderr)

    # Waiting longer, the run goes through once the alarm clears.
    emit = StdinEmit("--blocked-timeout", "60", env=env, out=tmp_path / "emit.out")
    emit.feed(rows(1, 3))
    emit.close_input()
    wait_for_event(logs / "emitter.log", "blocked", count=2)
    node.ctl("set_vm_memory_high_watermark", "0.4")
    assert emit.wait() == 0, emit.output()
    assert "note: the broker accepts publishes again" in emit.output()
    # Only confirms count: a message the blocked broker took before it stopped reading may
    # still land (at least once), so look at the second run's messages.
    got = drain(node.url, queue)
    second = [b.decode() for _, p, b in got if p.headers["source-file"] == "-"]
    assert second == rows(1, 3)


def test_a_user_who_may_not_publish_is_told_so_once_not_retried_forever(make_node, env):
    node = make_node()
    node.ctl("add_user", "reader", "secret-pw")
    queue = env["TASK_QUEUE"]
    ours = f"^{queue}(\\.dead|\\.events)?$"
    # It may declare and read the queue, and write to it, but not through amq.default.
    node.ctl("set_permissions", "-p", "/", "reader", ours, ours, ours)
    e = {**env, "AMQP_URL": f"amqp://reader:secret-pw@localhost:{node.port}/%2F"}
    r = subprocess.run(
        [str(BIN / "emit"), "--message", "One.", "--message", "Two."],
        env=e,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 4, r.stderr
    assert "refused access to queue" in r.stderr and "exchange 'amq.default'" in r.stderr
    assert no_traceback(r.stderr) and "reconnected" not in r.stderr
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        queue_counts(node.url, queue)  # nothing half-done: not even the queue was declared
