"""emit against the real broker: every input a user may have, good or bad.

A bad input must stop the run before anything is published: each refusal test checks the
exit code, the message, and that the queue was never even declared.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pika
import pytest

from emitter.source import CsvOptions, ReadStats, iter_rows
from tests.helpers import BIN, ROOT, drain, events, no_traceback, queue_ready
from utils.errors import BadInput

#: Just over RabbitMQ's 128 MiB message size limit, in two fields joined by a space.
HALF_OVER_LIMIT = 64 * 1024 * 1024 + 1


def run(
    *args: str, env: dict[str, str], input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run emit with raw bytes on stdin (the shared helper takes text only)."""
    done = subprocess.run(
        [str(BIN / "emit"), *args], env=env, input=input, capture_output=True, timeout=120, cwd=ROOT
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def queue_exists(url: str, queue: str) -> bool:
    """True if the queue exists (a passive declare answers 404 otherwise)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if conn.is_open:
            conn.close()


def bodies(url: str, queue: str) -> list[str]:
    return [body.decode() for _, _, body in drain(url, queue)]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- bad input: refused whole, nothing sent ------------------------------------------------

BAD_FILES = [
    pytest.param(
        b"Task 1 .\n\xff\xfe Task 2 ..\n", "bad.csv:2: bytes that are not utf-8", id="undecodable"
    ),
    pytest.param(b"Task 1 .\nTask\x00 2 ..\n", "bad.csv:2: a NUL byte", id="nul-byte"),
    pytest.param(
        b'Task 1 .\nTask 2 ..\n"Task 3 never closes\nTask 4 .\n',
        "bad.csv:3: a quote is opened and never closed",
        id="unterminated-quote",
    ),
    pytest.param(b"Task 1 .\n,\nTask 3 .\n", "bad.csv:2: the task body is empty", id="empty-body"),
]


@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_a_bad_row_anywhere_refuses_the_whole_file_and_declares_nothing(
    env, broker_url, queue, tmp_path, data, message
):
    path = write(tmp_path, "bad.csv", data)
    r = run(str(path), env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "hint:" in r.stderr and no_traceback(r.stderr)
    assert r.stdout == ""
    assert not queue_exists(broker_url, queue)


def test_a_row_without_the_chosen_column_refuses_the_file(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "bad.csv", b"1,Task 1 .\n2,Task 2 ..\n3\n")
    r = run(str(path), "--column", "2", env=env)
    assert r.returncode == 2
    assert "bad.csv:3: has 1 field, no column 2" in r.stderr
    assert no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


def test_a_header_without_the_named_column_refuses_the_file(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "bad.csv", b"id,text\n1,Task 1 .\n")
    r = run(str(path), "--header", "--column", "body", env=env)
    assert r.returncode == 2
    assert "bad.csv:1: the header has no column 'body' (it has: id, text)" in r.stderr
    assert not queue_exists(broker_url, queue)


def test_a_body_over_the_broker_size_limit_refuses_the_file(env, broker_url, queue, tmp_path):
    big = b"x" * HALF_OVER_LIMIT
    path = write(tmp_path, "bad.csv", b"Task 1 .\n" + big + b"," + big + b"\n")
    r = run(str(path), env=env)
    assert r.returncode == 2
    assert "bad.csv:2: the body is over the broker's 128 MiB message size limit" in r.stderr
    assert no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


@pytest.mark.parametrize(
    ("data", "args"),
    [
        pytest.param(b"", (), id="empty"),
        pytest.param(b"\n\n  \n", (), id="only-blank-lines"),
        pytest.param(b"id,body\n", ("--header",), id="only-a-header"),
    ],
)
def test_a_file_without_tasks_says_no_tasks_and_exits_1(
    env, broker_url, queue, tmp_path, data, args
):
    path = write(tmp_path, "empty.csv", data)
    r = run(str(path), *args, env=env)
    assert r.returncode == 1
    assert f"no tasks in {path}" in r.stderr and no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


def test_a_start_row_past_the_end_says_no_tasks(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "t.csv", b"a .\nb .\n")
    r = run(str(path), "--start-row", "3", env=env)
    assert r.returncode == 1
    assert "from row 3 on (it has 2 rows)" in r.stderr
    assert not queue_exists(broker_url, queue)


def test_a_directory_is_refused_in_one_line(env, broker_url, queue, tmp_path):
    r = run(str(tmp_path), env=env)
    assert r.returncode == 2
    assert f"error: {tmp_path} is a directory, not a CSV file" in r.stderr
    assert no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


def test_a_missing_file_is_refused_in_one_line(env, broker_url, queue, tmp_path):
    r = run(str(tmp_path / "nope.csv"), env=env)
    assert r.returncode == 2
    assert "nope.csv: no such file" in r.stderr and no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


def test_an_unreadable_file_is_refused_in_one_line(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "secret.csv", b"a .\n")
    path.chmod(0)
    if os.getuid() == 0:  # root reads any file but a write-only sysctl
        path = Path("/proc/sys/vm/drop_caches")
    r = run(str(path), env=env)
    assert r.returncode == 2, r.stderr
    assert f"{path}: permission denied" in r.stderr and no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param((), "nothing to send", id="no-source"),
        pytest.param(
            ("tasks.csv", "--delimiter", ";;"), "--delimiter must be one character", id="delimiter"
        ),
        pytest.param(
            ("tasks.csv", "--encoding", "klingon"), "unknown --encoding 'klingon'", id="encoding"
        ),
        pytest.param(("tasks.csv", "-m", "x"), "give a file or --message, not both", id="both"),
    ],
)
def test_bad_options_are_refused_before_the_broker_is_asked(env, broker_url, queue, args, message):
    r = run(*args, env=env)
    assert r.returncode == 2
    assert message in r.stderr and no_traceback(r.stderr)
    assert not queue_exists(broker_url, queue)


def test_a_bad_row_on_stdin_stops_there_keeping_the_confirmed_rows(
    emit_env, broker_url, queue, logs
):
    r = run("-", env=emit_env, input=b"Task 1 .\n\nTask 2 ..\nTask \xff 3\nTask 4 .\n")
    assert r.returncode == 2
    resume = "confirmed rows 1..2 of 2; rerun with --start-row 3"
    assert f"-:4: bytes that are not utf-8 (byte 0xff); {resume}" in r.stderr
    assert bodies(broker_url, queue) == ["Task 1 .", "Task 2 .."]
    failed = [e for e in events(logs / "emitter.log") if e["event"] == "emit_failed"]
    assert failed[-1]["resume"] == resume


# -- good input: what lands in the queue ---------------------------------------------------


def test_header_and_a_column_by_name_send_only_that_field(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "t.csv", b"id,body,owner\n1,Task one .,ann\n2,Task two ..,bob\n")
    r = run(str(path), "--header", "--column", "body", env=env)
    assert r.returncode == 0, r.stderr
    got = drain(broker_url, queue)
    assert [b.decode() for _, _, b in got] == ["Task one .", "Task two .."]
    assert [p.headers["source-row"] for _, p, _ in got] == [1, 2]  # the header is not a row


def test_a_column_by_number_and_a_delimiter(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "t.csv", b"1;Task one .;x\n2;Task two, with a comma ..;y\n")
    r = run(str(path), "--delimiter", ";", "--column", "2", env=env)
    assert r.returncode == 0, r.stderr
    assert bodies(broker_url, queue) == ["Task one .", "Task two, with a comma .."]


def test_without_a_column_the_fields_are_joined_by_a_space(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "t.csv", b'Task,"one, quoted",.\n')
    assert run(str(path), env=env).returncode == 0
    assert bodies(broker_url, queue) == ["Task one, quoted ."]


def test_a_utf8_bom_is_not_part_of_the_first_column_name(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "t.csv", "\ufeffbody,id\nTâche une .,1\n".encode())
    r = run(str(path), "--header", "--column", "body", env=env)
    assert r.returncode == 0, r.stderr
    assert bodies(broker_url, queue) == ["Tâche une ."]


def test_latin1_with_its_encoding_arrives_as_utf8(env, broker_url, queue, tmp_path):
    path = write(tmp_path, "t.csv", "Café crème ..\nNaïve .\n".encode("latin-1"))
    refused = run(str(path), env=env)
    assert refused.returncode == 2 and "t.csv:1: bytes that are not utf-8" in refused.stderr
    assert "--encoding" in refused.stderr
    r = run(str(path), "--encoding", "latin-1", env=env)
    assert r.returncode == 0, r.stderr
    got = drain(broker_url, queue)
    assert [b for _, _, b in got] == ["Café crème ..".encode(), "Naïve .".encode()]


def test_stdin_rows_are_sent_in_order_with_blank_lines_counted(emit_env, broker_url, queue, logs):
    r = run("-", env=emit_env, input=b"Task 1 .\n\nTask 2 ..\n\n\nTask 3 ...\n")
    assert r.returncode == 0, r.stderr
    assert "3 published, 3 confirmed, 0 republished, 3 blank lines skipped" in r.stdout
    got = drain(broker_url, queue)
    assert [b.decode() for _, _, b in got] == ["Task 1 .", "Task 2 ..", "Task 3 ..."]
    assert [p.headers["source-file"] for _, p, _ in got] == ["-"] * 3
    done = [e for e in events(logs / "emitter.log") if e["event"] == "emit_done"]
    assert done[-1]["blank"] == "3" and done[-1]["confirmed"] == "3"


def test_messages_are_sent_without_a_file(emit_env, broker_url, queue):
    r = run("--message", "Hello...", "-m", "World.", env=emit_env)
    assert r.returncode == 0, r.stderr
    got = drain(broker_url, queue)
    assert [b.decode() for _, _, b in got] == ["Hello...", "World."]
    assert [p.headers["source-row"] for _, p, _ in got] == [1, 2]


def test_a_slice_keeps_the_original_row_numbers(env, broker_url, queue, tmp_path):
    rows = [f"Task {n} {'.' * (n % 4 + 1)}" for n in range(1, 11)]
    text = "\n".join(rows[:4]) + "\n\n" + "\n".join(rows[4:]) + "\n"  # a blank line is no row
    path = write(tmp_path, "t.csv", text.encode())
    r = run(str(path), "--start-row", "3", "--limit", "4", env=env)
    assert r.returncode == 0, r.stderr
    got = drain(broker_url, queue)
    assert [b.decode() for _, _, b in got] == rows[2:6]
    run_id = got[0][1].headers["run-id"]
    assert [p.message_id for _, p, _ in got] == [f"{run_id}-{n}" for n in range(3, 7)]
    assert [p.headers["source-row"] for _, p, _ in got] == [3, 4, 5, 6]


def test_dry_run_needs_no_broker_and_sends_nothing(env, broker_url, queue, tmp_path):
    closed = {**env, "AMQP_URL": "amqp://guest:guest@localhost:1/%2F"}
    r = run("tasks.csv", "--dry-run", env=closed)
    assert r.returncode == 0, r.stderr
    assert "row 1 (line 1): Task 01 .........  [9 dots]" in r.stdout
    assert "dry run: 20 tasks would be sent; nothing was published" in r.stdout
    bad = write(tmp_path, "bad.csv", b"a .\n\x00\n")
    r = run(str(bad), "--dry-run", env=closed)
    assert r.returncode == 2 and "bad.csv:2: a NUL byte" in r.stderr
    assert not queue_exists(broker_url, queue)


def test_longest_first_sends_tasks_by_decreasing_dots(env, broker_url, queue, tmp_path):
    dots = [3, 1, 7, 2, 7, 5, 1, 4]
    path = write(
        tmp_path, "t.csv", "".join(f"Task {n} {'.' * d}\n" for n, d in enumerate(dots, 1)).encode()
    )
    r = run(str(path), "--order", "longest-first", env=env)
    assert r.returncode == 0, r.stderr
    got = drain(broker_url, queue)
    sent = [b.decode().count(".") for _, _, b in got]
    assert sent == sorted(dots, reverse=True)
    # ties keep file order, and every message keeps its own row number
    assert [p.headers["source-row"] for _, p, _ in got] == [3, 5, 6, 8, 1, 4, 2, 7]


def test_the_summary_line_says_everything_with_the_password_masked(
    env, broker_url, queue, tmp_path
):
    path = write(tmp_path, "t.csv", b"a .\n\nb ..\n")
    r = run(str(path), env=env)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert re.fullmatch(
        rf"published 2 tasks to queue {queue} at amqp://guest:\*\*\*@localhost:\d+/%2F in "
        r"[\d.]+ s \(all confirmed\): 2 published, 2 confirmed, 0 republished, "
        r"1 blank line skipped, [\d,]+ tasks/s; run \S+",
        line,
    ), line
    assert "guest:guest" not in r.stdout + r.stderr


def test_quiet_prints_only_the_summary(env, broker_url, queue):
    # an existing classic queue would get a note, and so would a queue with no worker;
    # --quiet leaves them out
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    conn.channel().queue_declare(queue, durable=True)
    conn.close()
    loud = run("-m", "x .", env=env)
    assert "note: queue" in loud.stderr and "note: no worker is listening" in loud.stderr
    drain(broker_url, queue)  # tasks left waiting would be a warning, which --quiet keeps
    r = run("-m", "x .", "--quiet", env=env)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("published 1 task ") and r.stdout.count("\n") == 1


def test_open_admin_opens_the_queue_page_without_asking(env, broker_url, queue, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(0o755)
    port = int(broker_url.split(":")[-1].split("/")[0])
    r = run("-m", "x .", "--open-admin", env={**env, "BROWSER": str(browser)})
    assert r.returncode == 0, r.stderr
    page = f"http://localhost:{port + 10000}/#/queues/%2F/{queue}"
    assert opened.read_text().splitlines() == [page]
    assert f"opened {page}" in r.stderr


# CSV rows as pure functions, and the bad-input table: nothing is published.


def rows(text: str, **kw) -> list[tuple[int, str]]:
    stats = ReadStats()
    return [(r.row, r.body) for r in iter_rows(io.StringIO(text), "f.csv", CsvOptions(**kw), stats)]


def test_rows_join_fields_with_a_space_and_skip_blank_lines():
    assert rows("a,b\n\nc\n") == [(1, "a b"), (2, "c")]


def test_header_and_column_pick_one_field():
    assert rows("id,body\n1,x.\n2,y..\n", header=True, column="body") == [(1, "x."), (2, "y..")]
    assert rows("1,x.\n2,y..\n", column="2") == [(1, "x."), (2, "y..")]


def test_a_slice_keeps_original_row_numbers():
    assert rows("a\nb\nc\nd\n", start_row=2, limit=2) == [(2, "b"), (3, "c")]


@pytest.mark.parametrize(
    ("text", "kw", "msg"),
    [
        ('a\n"b\n', {}, "f.csv:2: a quote is opened and never closed"),
        ("a\nb\x00c\n", {}, "f.csv:2: a NUL byte"),
        ("a,b\nc\n", {"column": "2"}, "f.csv:2: has 1 field, no column 2"),
        ("a\n \n,\n", {}, "f.csv:3: the task body is empty"),
    ],
)
def test_bad_rows_name_file_and_line(text, kw, msg):
    with pytest.raises(BadInput) as err:
        rows(text, **kw)
    assert msg in err.value.message


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
        "f.csv:2: has 1 field, no column 2",
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
    f = str(write(tmp_path, "f.csv", files["f.csv"])) if files else ""
    args = [a.replace("{f}", f).replace("{tmp}", str(tmp_path)) for a in args]
    r = run(*args, env=env)
    assert r.returncode == code, r.stdout + r.stderr
    assert phrase.lower() in r.stderr.lower()
    assert no_traceback(r.stderr)
    assert queue_ready(broker_url, queue) == 0
