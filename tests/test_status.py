"""`tasks status` and `tasks purge` against queues with known contents on the real broker."""

from __future__ import annotations

import json
import shlex
from urllib.parse import urlsplit

import pika

from tests.helpers import (
    broker_script,
    events,
    queue_counts,
    run,
    spawn,
    wait_for,
    wait_for_event,
)
from utils.rabbitmq import DELIVERY_LIMIT


def status(env: dict[str, str], *args: str) -> dict:
    r = run("tasks", "status", "--json", *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_status_shows_ready_unacked_consumers_type_dead_letters_and_rates(
    env, broker_url, queue, logs, tmp_path
):
    bodies = ["held ....................", "one .", "two .", "three ."]
    args = [a for b in bodies for a in ("--message", b)]
    assert run("emit", *args, env=env).returncode == 0
    # Put one message in the dead-letter queue by hand, as a worker would.
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        ch.queue_declare(f"{queue}.dead", durable=True)
        ch.basic_publish("", f"{queue}.dead", b"dead", pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()

    s = status(env)
    assert s["queue"]["exists"] and s["queue"]["queue_type"] == "quorum"
    assert (s["queue"]["ready"], s["queue"]["consumers"], s["queue"]["dead"]) == (4, 0, 1)
    assert s["management"]["answered"], s["management"]["note"]

    # A worker holds the first message unacked (20 dots at 1 s each) with prefetch 1.
    w = spawn("work", "--name", "holder", "--seconds-per-dot", "1", env=env, out=tmp_path / "w")
    try:
        wait_for_event(logs / "worker-holder.log", "started", alive=w)
        # The management API's statistics lag by up to 5 s; AMQP's counts do not.
        held = wait_for(
            "the management API to count the unacked message",
            lambda: (x := status(env))["queue"]["unacked"] == 1 and x,
            timeout=20,
        )
        q = held["queue"]  # type: ignore[index]
        assert (q["ready"], q["consumers"], q["unacked"]) == (3, 1, 1)
        r = run("tasks", "status", env=env)
        assert "ready 3, unacked 1, consumers 1" in r.stdout
        assert f"dead-letter queue '{queue}.dead': 1 message" in r.stdout
        assert "rates (per second, from the management API)" in r.stdout
    finally:
        w.kill()


def test_status_says_plainly_when_the_management_api_does_not_answer(env, queue):
    assert run("emit", "--message", "x .", env=env).returncode == 0
    s = status(env, "--management-url", "http://localhost:1/")
    assert s["queue"]["ready"] == 1 and s["queue"]["queue_type"] == "quorum"
    assert s["queue"]["unacked"] is None and not s["management"]["answered"]
    assert "did not answer" in s["management"]["note"]
    r = run("tasks", "status", env={**env, "TASK_MANAGEMENT_URL": "http://localhost:1/"})
    assert r.returncode == 0 and "unacked unknown" in r.stdout and "did not answer" in r.stdout


def test_status_of_a_queue_that_does_not_exist_says_so(env, queue):
    s = status(env)
    assert not s["queue"]["exists"] and s["queue"]["ready"] is None


def test_purge_asks_first_and_removes_nothing_when_declined(env, broker_url, queue):
    assert run("emit", "--message", "a .", "--message", "b .", env=env).returncode == 0
    r = run("tasks", "purge", env=env, input=b"n\n")
    assert r.returncode == 1 and "nothing removed" in r.stdout
    assert "Remove all 2 ready messages" in r.stdout
    assert queue_counts(broker_url, queue) == (2, 0)
    r = run("tasks", "purge", env=env, input=b"y\n")
    assert r.returncode == 0 and "removed 2 messages" in r.stdout
    assert queue_counts(broker_url, queue) == (0, 0)


def test_purge_yes_removes_without_asking_and_says_how_many(env, broker_url, queue):
    assert (
        run("emit", "--message", "a .", "--message", "b .", "--message", "c .", env=env).returncode
        == 0
    )
    r = run("tasks", "purge", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"removed 3 messages from queue '{queue}'"
    assert queue_counts(broker_url, queue) == (0, 0)
    r = run("tasks", "purge", "--yes", "--queue", f"{queue}-none", env=env)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_a_queue_without_a_dead_letter_target_is_warned_of_once_with_the_command_that_fixes_it(
    env, broker_url, queue, logs, tmp_path
):
    """A quorum queue as the code before made them: work and status say, in one line, what
    is missing and the policy that fixes it; once the policy is set, neither says it."""
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        conn.close()
    r = run("work", "--name", "old", "--exit-when-idle", "0.2", env=env)
    assert r.returncode == 0, r.stderr
    warned = [e for e in events(logs / "worker-old.log") if e["event"] == "queue_warning"]
    assert len(warned) == 1 and f"queue '{queue}' has no dead-letter target" in warned[0]["note"]
    command = warned[0]["note"].split("fix it with: ", 1)[1]
    assert command.startswith("rabbitmqctl set_policy ") and "\n" not in command
    s = status(env)
    assert s["queue"]["warnings"] == [warned[0]["note"]]
    text = run("tasks", "status", env=env).stdout
    assert [line for line in text.splitlines() if "warning" in line] == [
        f"  warning: {warned[0]['note']}"
    ]
    # Without the management API, a policy cannot be seen: the warning says so.
    blind = status(env, "--management-url", "http://localhost:1/")["queue"]["warnings"]
    assert len(blind) == 1 and "could not be checked" in blind[0]

    # The exact command, run on our node (scripts/broker ctl runs rabbitmqctl there).
    port = str(urlsplit(broker_url).port)
    name = shlex.split(command)[2]
    fixed = broker_script("ctl", *shlex.split(command)[1:], BROKER_PORT=port)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    try:
        assert status(env)["queue"]["warnings"] == []
        r = run("work", "--name", "fixed", "--exit-when-idle", "0.2", env=env)
        assert r.returncode == 0 and "queue_warning" not in names(logs / "worker-fixed.log")
        # ... and the policy does what our own arguments would: a message rejected past the
        # delivery limit lands in <queue>.dead.
        assert run("emit", "--message", "bounced", env=env).returncode == 0
        assert reject_until_gone(broker_url, queue) == DELIVERY_LIMIT + 1
        wait_for("the dead letter", lambda: queue_counts(broker_url, f"{queue}.dead")[0] == 1)
    finally:
        broker_script("ctl", "clear_policy", name, BROKER_PORT=port)


def names(log) -> list[str]:
    return [e["event"] for e in events(log)]


def reject_until_gone(url: str, queue: str, most: int = 200) -> int:
    """Take the queue's one message and reject it with requeue until the broker keeps it
    (or `most` times); returns how many times it was delivered. (A reject: from RabbitMQ
    4.3 a nack is a plain return, which the delivery limit never counts.)"""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        deliveries = 0
        misses = 0
        while misses < 20 and deliveries < most:
            method, _props, _body = ch.basic_get(queue)
            if method is None:
                misses += 1
                conn.sleep(0.05)
                continue
            misses = 0
            deliveries += 1
            ch.basic_reject(method.delivery_tag, requeue=True)
        return deliveries
    finally:
        conn.close()


def test_the_policy_in_force_is_the_highest_priority_match_for_queues():
    from utils.rabbitmq.management import _policy_in_force

    policies = [
        {"pattern": "^q$", "apply-to": "queues", "priority": 0, "definition": {"a": 1}},
        {"pattern": "^q", "apply-to": "all", "priority": 5, "definition": {"b": 2}},
        {"pattern": "^q$", "apply-to": "exchanges", "priority": 9, "definition": {"c": 3}},
        {"pattern": "^other$", "apply-to": "queues", "priority": 7, "definition": {"d": 4}},
        {"pattern": "(", "apply-to": "queues", "priority": 8, "definition": {"e": 5}},
    ]
    assert _policy_in_force(policies, "q") == {"b": 2}
    assert _policy_in_force(policies, "nothing") == {}
    assert _policy_in_force("not a list", "q") == {}


def test_the_policy_command_names_one_queue_and_its_vhost_quoted_for_a_shell():
    from utils.rabbitmq.management import policy_command

    assert policy_command("task_queue", "/", {"delivery-limit": 20}) == (
        "rabbitmqctl set_policy task_queue-tasks '^task_queue$' '{\"delivery-limit\":20}' "
        "--apply-to queues"
    )
    cmd = policy_command("jobs.v2", "my vhost", {"x": ""})
    assert shlex.split(cmd) == [
        "rabbitmqctl",
        "set_policy",
        "-p",
        "my vhost",
        "jobs.v2-tasks",
        "^jobs\\.v2$",
        '{"x":""}',
        "--apply-to",
        "queues",
    ]
