"""The bad-input table: every case exits non-zero with one clear line, no traceback, and
(for emit) publishes nothing."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest

from tests.helpers import events, no_traceback, queue_ready, run


def write(tmp: Path, name: str, data: bytes) -> str:
    p = tmp / name
    p.write_bytes(data)
    return str(p)


# (id, files to make, args, exit code, phrase in the message)
EMIT_CASES = [
    (
        "bad-encoding",
        {"f.csv": b"Task 1 .\nT\xe9che 2 ..\n"},
        ["{f}"],
        2,
        "f.csv:2: bytes that are not utf-8",
    ),
    ("nul-byte", {"f.csv": b"Task 1 .\nTa\x00sk 2\n"}, ["{f}"], 2, "f.csv:2: a NUL byte"),
    (
        "unterminated-quote",
        {"f.csv": b'a .\n"b ..\nc\n'},
        ["{f}"],
        2,
        "a quote is opened and never closed",
    ),
    (
        "ragged-column",
        {"f.csv": b"1,a.\n2\n"},
        ["{f}", "--column", "2"],
        2,
        "f.csv:2: has 1 field(s), no column 2",
    ),
    ("empty-body", {"f.csv": b"a.\n , \n"}, ["{f}"], 2, "f.csv:2: the task body is empty"),
    (
        "unknown-column-name",
        {"f.csv": b"id,body\n1,a\n"},
        ["{f}", "--header", "--column", "text"],
        2,
        "no column 'text'",
    ),
    (
        "column-name-without-header",
        {"f.csv": b"1,a\n"},
        ["{f}", "--column", "body"],
        2,
        "no header",
    ),
    ("empty-file", {"f.csv": b""}, ["{f}"], 1, "no tasks in"),
    ("header-only", {"f.csv": b"id,body\n"}, ["{f}", "--header"], 1, "no tasks in"),
    ("blank-lines-only", {"f.csv": b"\n\n\n"}, ["{f}"], 1, "no tasks in"),
    ("start-row-past-the-end", {"f.csv": b"a\nb\n"}, ["{f}", "--start-row", "5"], 1, "no tasks in"),
    ("directory", {}, ["{tmp}"], 2, "is a directory"),
    ("missing-file", {}, ["{tmp}/nope.csv"], 2, "no such file"),
    ("two-char-delimiter", {"f.csv": b"a\n"}, ["{f}", "--delimiter", ";;"], 2, "one character"),
    (
        "unknown-encoding",
        {"f.csv": b"a\n"},
        ["{f}", "--encoding", "klingon"],
        2,
        "unknown --encoding",
    ),
    ("start-row-zero", {"f.csv": b"a\n"}, ["{f}", "--start-row", "0"], 2, "--start-row"),
    ("nothing-to-send", {}, [], 2, "nothing to send"),
    ("file-and-message", {"f.csv": b"a\n"}, ["{f}", "--message", "x"], 2, "not both"),
]


@pytest.mark.parametrize(
    ("files", "args", "code", "phrase"), [c[1:] for c in EMIT_CASES], ids=[c[0] for c in EMIT_CASES]
)
def test_emit_refuses_bad_input_and_publishes_nothing(
    env, broker_url, queue, tmp_path, files, args, code, phrase
):
    f = write(tmp_path, "f.csv", files["f.csv"]) if files else ""
    args = [a.replace("{f}", f).replace("{tmp}", str(tmp_path)) for a in args]
    r = run("emit", *args, env=env)
    assert r.returncode == code, r.stdout + r.stderr
    assert phrase.lower() in r.stderr.lower()
    assert no_traceback(r.stderr)
    assert queue_ready(broker_url, queue) == 0


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
def test_work_refuses_bad_options(env, args, phrase):
    r = run("work", *args, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert phrase in r.stderr and no_traceback(r.stderr)


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
    [c[1:] for c in CONNECTION_CASES],
    ids=[c[0] for c in CONNECTION_CASES],
)
def test_bad_connection_settings_say_what_to_fix(env, broker_url, cmd, url, code, phrase):
    port = broker_url.rsplit(":", 1)[1].split("/")[0]
    url = url.format(port=port)
    args = {"emit": ["--message", "x"], "work": ["--max-tasks", "1"], "tasks": ["status"]}[cmd]
    r = run(cmd, *args, env={**env, "AMQP_URL": url})
    assert r.returncode == code, r.stdout + r.stderr
    assert phrase in r.stderr and no_traceback(r.stderr)
    assert "wrong" not in r.stderr  # the password never shows


def test_tasks_report_on_an_empty_folder_says_what_to_do(env, tmp_path):
    r = run("tasks", "report", str(tmp_path), env=env)
    assert r.returncode == 1
    assert "no log lines" in r.stderr and "emit" in r.stderr and no_traceback(r.stderr)


def test_tasks_report_for_an_unknown_run_says_so(env, logs):
    assert run("emit", "--message", "x", env=env).returncode == 0
    r = run("tasks", "report", str(logs), "--run", "no-such-run", env=env)
    assert r.returncode == 1 and "no-such-run" in r.stderr and no_traceback(r.stderr)


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
