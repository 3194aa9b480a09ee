"""Issue 23, part 1: who wrote an event (the broker-checked user_id), and which queue a
report is about. Every test here runs the real commands against a real broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pika
import pytest

from tests.conftest import TEST_PORT
from tests.helpers import broker_script, no_traceback, run

pytestmark = pytest.mark.broker

FORGER_PW = "forger-pw"


@pytest.fixture
def intruder(broker_url: str) -> Iterator[str]:
    """A second broker user, with every permission on the vhost: a client that may write."""
    name = f"intruder-{uuid.uuid4().hex[:6]}"
    for args in (["add_user", name, FORGER_PW], ["set_permissions", name, ".*", ".*", ".*"]):
        r = broker_script("ctl", *args, BROKER_PORT=str(TEST_PORT))
        assert r.returncode == 0, r.stdout + r.stderr
    yield name
    broker_script("ctl", "delete_user", name, BROKER_PORT=str(TEST_PORT))


def _forge(url: str, stream: str, lines: list[str], user_id: str | None) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        props = pika.BasicProperties(
            delivery_mode=2,
            message_id=f"forged.{uuid.uuid4().hex}",
            type="events",
            user_id=user_id,
        )
        ch.basic_publish("", stream, "\n".join(lines).encode(), props, mandatory=True)
    finally:
        if conn.is_open:
            conn.close()


def _forged_lines(run_id: str) -> list[str]:
    ts = "2026-12-04T14:00:00.000Z"
    out = []
    for row in (1, 2, 3, 99999999999999999999999999):
        tid = f"{run_id}-{row}"
        out.append(f"ts={ts} event=started worker=evil task={tid} run={run_id} row={row} attempt=1")
        secs = -2 if row > 3 else 2  # a bad value is skipped even when trusted (test_report)
        out.append(
            f"ts={ts} event=done worker=evil task={tid} run={run_id} row={row} seconds={secs}"
        )
    fake = "29990101T000000-beef"
    out.append(
        f"ts=2999-01-01T00:00:00.000Z event=emit_started run={fake} source=x queue=q total=1"
    )
    out.append(f"ts=2999-01-01T00:00:01.000Z event=emit_done run={fake} rows=1-1 total=1")
    return out


def _emit_three(env: dict[str, str]) -> str:
    r = run("emit", "-m", "a.", "-m", "b.", "-m", "c.", env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().rsplit("run ", 1)[1]


def test_a_forged_batch_from_another_user_is_set_aside_and_the_report_tells_the_truth(
    env, broker_url, intruder
):
    run_id = _emit_three(env)
    stream = f"{env['TASK_QUEUE']}.events"
    url = broker_url.replace("guest:guest", f"{intruder}:{FORGER_PW}")
    _forge(url, stream, _forged_lines(run_id), user_id=intruder)
    _forge(url, stream, _forged_lines(run_id), user_id=None)

    r = run("tasks", "report", "--source", "broker", "--json", env=env)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    latest = doc["runs"][-1]
    assert latest["run"] == run_id  # the run dated 2999 is not the latest: it is not there
    assert latest["audit"]["emitted"] == 3
    assert latest["audit"]["done_once"] == [] and latest["audit"]["missing"] == []
    assert f"set aside 10 events from user '{intruder}' (not trusted" in r.stderr
    assert "set aside 10 events with no user id" in r.stderr
    assert no_traceback(r.stderr)
    r = run("tasks", "status", env=env)
    assert "ready 3" in r.stdout or "3 ready" in r.stdout, r.stdout

    # Named with --trust-user, the intruder's events count (and so would lie again).
    r = run("tasks", "report", "--source", "broker", "--json", "--trust-user", intruder, env=env)
    doc = json.loads(r.stdout)
    assert doc["runs"][-1]["audit"]["done_once"][:3] == [1, 2, 3]
    assert f"from user '{intruder}'" not in r.stderr


def test_the_broker_refuses_a_batch_that_claims_another_users_id(env, broker_url, intruder):
    _emit_three(env)
    url = broker_url.replace("guest:guest", f"{intruder}:{FORGER_PW}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        _forge(url, f"{env['TASK_QUEUE']}.events", ["ts=x event=done"], user_id="guest")
    assert caught.value.reply_code == 406


def test_our_own_events_carry_the_login_as_user_id(env, broker_url):
    _emit_three(env)
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        got: list[str | None] = []
        for _m, props, _b in ch.consume(
            f"{env['TASK_QUEUE']}.events",
            arguments={"x-stream-offset": "first"},
            inactivity_timeout=30,
        ):
            assert props is not None, "no event batch arrived"
            got.append(props.user_id)
            break
    finally:
        conn.close()
    assert got == ["guest"]


def test_queue_chooses_the_runs_of_that_queue_for_report_and_wait(env, queue):
    other = {**env, "TASK_QUEUE": f"{queue}-other"}
    mine = _emit_three(env)
    r = run("emit", "-m", "x.", env=other)
    assert r.returncode == 0, r.stderr
    try:
        r = run("tasks", "report", "--json", "--logs-only", "--queue", queue, env=env)
        assert json.loads(r.stdout)["runs"][-1]["run"] == mine, r.stderr
        r = run("tasks", "report", "--queue", "nosuchqueue", env=env)
        assert r.returncode == 1 and "no run of queue 'nosuchqueue'" in r.stderr, r.stderr
        assert queue in r.stderr and no_traceback(r.stderr)
        r = run("tasks", "wait", "--queue", "nosuchqueue", "--timeout", "0", env=env)
        assert r.returncode == 1 and "no run of queue 'nosuchqueue'" in r.stderr, r.stderr
    finally:
        conn = pika.BlockingConnection(pika.URLParameters(env["AMQP_URL"]))
        for q in (other["TASK_QUEUE"], f"{other['TASK_QUEUE']}.events"):
            conn.channel().queue_delete(q)
        conn.close()


@pytest.fixture
def other_vhost(broker_url: str) -> Iterator[str]:
    """A second vhost on the test broker, where guest may do anything and no queue is."""
    name = f"vh-{uuid.uuid4().hex[:6]}"
    for args in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
        r = broker_script("ctl", *args, BROKER_PORT=str(TEST_PORT))
        assert r.returncode == 0, r.stdout + r.stderr
    yield name
    broker_script("ctl", "delete_vhost", name, BROKER_PORT=str(TEST_PORT))


def _delete_queue(url: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_delete(queue)
    finally:
        conn.close()


def test_a_report_whose_queue_does_not_exist_says_so_and_calls_nothing_missing(env, queue):
    run_id = _emit_three(env)
    _delete_queue(env["AMQP_URL"], queue)
    r = run("tasks", "report", env=env)
    assert r.returncode == 0, r.stdout + r.stderr  # as for a run not judged yet
    said = " ".join(r.stdout.split())
    assert f"the queue {queue} does not exist on amqp://localhost:{TEST_PORT}/:" in said, said
    assert "these 3 rows cannot be judged" in said and "3 cannot be judged" in said
    assert "0 missing" in said and "missing rows" not in said
    assert "--start-row" not in said and "send the missing" not in said
    assert "guest:guest" not in said and no_traceback(r.stderr)
    doc = json.loads(run("tasks", "report", "--json", "--run", run_id, env=env).stdout)
    where = doc["runs"][-1]["whereabouts"]
    assert where["cannot_judge"] == [1, 2, 3] and doc["runs"][-1]["audit"]["missing"] == []


def test_a_run_emitted_to_another_vhost_is_named_as_such_not_missing(env, queue, other_vhost):
    _emit_three(env)
    elsewhere = env["AMQP_URL"].replace("/%2F", f"/{other_vhost}")
    r = run("tasks", "report", "--url", elsewhere, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())
    assert (
        f"this run was emitted to amqp://localhost:{TEST_PORT}/, not to "
        f"amqp://localhost:{TEST_PORT}/{other_vhost}: these 3 rows cannot be judged" in said
    ), said
    assert "missing rows" not in said and "--start-row" not in said
    assert no_traceback(r.stderr)
    # The same report on the broker it was emitted to judges it: 3 waiting, none missing.
    r = run("tasks", "report", env=env)
    assert "waiting 3" in " ".join(r.stdout.split()) and "cannot be judged" not in r.stdout
