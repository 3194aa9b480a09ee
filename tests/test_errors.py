"""Every error we know about: one clear line, a hint, a named exit code, no traceback."""

from __future__ import annotations

import os
import pty
import subprocess

import pika
import pytest

from tests.helpers import BIN, no_traceback, run


@pytest.mark.parametrize("cmd", [["emit", "tasks.csv"], ["work", "--max-tasks", "1"]])
def test_unreachable_broker_says_how_to_start_one(offline_env, cmd):
    env = {**offline_env, "AMQP_URL": "amqp://guest:guest@localhost:1/%2F"}
    r = run(*cmd, env=env)
    assert r.returncode == 3, r.stderr
    assert "no broker answers at localhost:1" in r.stderr
    assert "make broker-up" in r.stderr
    assert no_traceback(r.stderr)


def test_an_error_wraps_at_words_on_a_terminal_and_stays_whole_through_a_pipe(offline_env):
    e = {**offline_env, "AMQP_URL": "amqp://guest:guest@localhost:1/%2F", "COLUMNS": "50"}
    argv = [str(BIN / "emit"), "tasks.csv"]
    piped = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=60)
    hint = piped.stderr.splitlines()[1]
    assert hint.startswith("  hint: ") and len(hint) > 50 and len(piped.stderr.splitlines()) == 2

    main, child = pty.openpty()  # stderr on a terminal 50 columns wide
    try:
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=child, env=e, timeout=60)
        os.close(child)
        out = b""
        while chunk := _read(main):
            out += chunk
    finally:
        os.close(main)
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert proc.returncode == 3
    assert max(len(x) for x in lines) <= 50, lines
    # The same words, cut at spaces only, each continuation one step further in.
    assert " ".join(x.strip() for x in lines) == " ".join(piped.stderr.split())
    assert (
        lines[0].startswith("error: ")
        and lines[1].startswith("  ")
        and lines[-1].startswith("    ")
    )


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # the child side is closed and everything was read
        return b""


@pytest.mark.parametrize("cmd", [["emit", "tasks.csv"], ["work", "--max-tasks", "1"]])
def test_refused_credentials_say_which_user(env, broker_url, cmd):
    secret = "s3cr3t-marker"
    env = {**env, "AMQP_URL": broker_url.replace("guest:guest", f"guest:{secret}")}
    r = run(*cmd, env=env)
    assert r.returncode == 4, r.stderr
    assert "refused the login of user 'guest'" in r.stderr
    assert secret not in r.stderr + r.stdout
    assert no_traceback(r.stderr)


def test_unknown_vhost_says_how_to_create_it(env, broker_url):
    env = {**env, "AMQP_URL": broker_url.replace("%2F", "no-such-vhost")}
    r = run("emit", "tasks.csv", env=env)
    assert r.returncode == 4
    assert "vhost 'no-such-vhost' does not exist" in r.stderr
    assert "add_vhost" in r.stderr


def test_malformed_url_is_a_usage_error(offline_env):
    r = run("emit", "tasks.csv", env={**offline_env, "AMQP_URL": "http://localhost"})
    assert r.returncode == 2
    assert "is not an AMQP URL" in r.stderr and no_traceback(r.stderr)


@pytest.mark.parametrize("cmd", [["emit", "tasks.csv"], ["work", "--max-tasks", "1"]])
def test_queue_that_is_not_durable_is_refused_with_what_to_do(
    env, broker_url, broker_version, queue, cmd
):
    """A transient queue would lose its tasks in a restart. RabbitMQ 4.3 no longer makes a
    transient queue that is not exclusive (a deprecated feature, off by default): there
    the test checks that the broker refuses one, then holds an exclusive queue (the one
    transient kind left), which our commands refuse as well."""
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        if broker_version >= (4, 3):
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker, match="transient_nonexcl"):
                conn.channel().queue_declare(queue, durable=False)
            conn = pika.BlockingConnection(pika.URLParameters(broker_url))
            conn.channel().queue_declare(queue, exclusive=True)
            r = run(*cmd, env=env)
            assert r.returncode == 5, r.stderr
            assert f"queue '{queue}' is exclusive to another connection" in r.stderr
        else:
            conn.channel().queue_declare(queue, durable=False)
            r = run(*cmd, env=env)
            assert r.returncode == 5, r.stderr
            assert f"queue '{queue}' already exists but is not a durable" in r.stderr
    finally:
        if conn.is_open:
            conn.close()
    assert "--queue" in r.stderr and no_traceback(r.stderr)


def test_existing_classic_queue_is_used_as_it_is(env, broker_url, queue, logs):
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        conn.channel().queue_declare(queue, durable=True)  # as the tutorial declares it
    finally:
        conn.close()
    r = run("emit", "--message", "hello.", env=env)
    assert r.returncode == 0, r.stderr
    assert "exists as a classic queue; using it as it is" in r.stderr


# Bad connection settings, for every command.


CONNECTION_CASES = [
    ("malformed-url", "amqp://guest:guest@localhost:notaport/%2F", 2, "port"),
    ("unknown-host", "amqp://guest:guest@no-such-host.invalid:5672/%2F", 3, "unknown host"),
    ("refused-port", "amqp://guest:guest@localhost:1/%2F", 3, "connection refused"),
    ("wrong-credentials", "amqp://guest:wrong@localhost:{port}/%2F", 4, "refused the login"),
    (
        "unknown-vhost",
        "amqp://guest:guest@localhost:{port}/nowhere",
        4,
        "vhost 'nowhere' does not exist",
    ),
]


@pytest.mark.parametrize("cmd", ["emit", "work", "tasks"])
@pytest.mark.parametrize(
    ("url", "code", "phrase"),
    # A case with {port} needs the test broker, to refuse the login or the vhost.
    [
        pytest.param(*c[1:], id=c[0], marks=[pytest.mark.broker] if "{port}" in c[1] else [])
        for c in CONNECTION_CASES
    ],
)
def test_bad_connection_settings_say_what_to_fix(request, offline_env, cmd, url, code, phrase):
    if "{port}" in url:
        broker_url = request.getfixturevalue("broker_url")
        url = url.format(port=broker_url.rsplit(":", 1)[1].split("/")[0])
    args = {"emit": ["--message", "x"], "work": ["--max-tasks", "1"], "tasks": ["status"]}[cmd]
    r = run(cmd, *args, env={**offline_env, "AMQP_URL": url})
    assert r.returncode == code, r.stdout + r.stderr
    assert phrase in r.stderr and no_traceback(r.stderr)
    assert "wrong" not in r.stderr  # the password never shows
