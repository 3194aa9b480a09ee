"""Issue 23, finding 3: no text from a task or the broker reaches a terminal or a log line raw.

A CSV row with `ESC ] 0 ; title BEL`, `ESC [2J` and U+202E, and foreign messages whose id and
headers are escapes, go through the real emit, work and tasks commands; every byte they print
and every log file is checked for raw C0 (but the newline and the tab), DEL, C1 and bidi
overrides (utils/text.py's safe() shows them escaped).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pika
import pytest

from tests.helpers import BIN, ROOT, events, no_traceback

#: What must never reach a terminal or a log file raw.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

TITLE = "\x1b]0;owned\x07"
CLEAR = "\x1b[2J"
RLO = "\u202e"
HOSTILE = f"Task {TITLE}{CLEAR}{RLO}evil ."
FAILING = f"fail {CLEAR}{RLO}\x9b31m"
#: A command that prints the body (its output is logged) and fails the rows that say so.
ECHO_OR_FAIL = 'cat; case "$TASK_BODY" in fail*) exit 1;; esac'


def _run(cmd: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run one of our commands; its exit code, stdout and stderr as the exact bytes decode
    (no newline translation, which would hide a raw carriage return)."""
    r = subprocess.run(
        [str(BIN / cmd), *args], env=env, capture_output=True, timeout=120, cwd=str(ROOT)
    )
    out, err = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")
    assert no_traceback(err), err
    return r.returncode, out, err


def _assert_safe(where: str, text: str) -> None:
    m = RAW.search(text)
    assert m is None, f"{where} holds a raw {m[0]!r}: {text!r}"


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.csv"
    path.write_text(f"{HOSTILE}\n{FAILING}\n", encoding="utf-8")
    return path


def test_emit_dry_run_shows_a_hostile_row_escaped(offline_env, tmp_path):
    code, out, err = _run("emit", str(_csv(tmp_path)), "--dry-run", env=offline_env)
    assert code == 0, err
    _assert_safe("emit --dry-run", out + err)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\u202eevil" in out, out


@pytest.mark.broker
def test_hostile_text_from_tasks_and_foreign_messages_is_escaped_everywhere(
    env, broker_url, queue, logs, tmp_path
):
    code, out, err = _run("emit", str(_csv(tmp_path)), env=env)
    assert code == 0, err
    _assert_safe("emit", out + err)
    foreign_id = f"{TITLE}{CLEAR}{RLO}id"
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        ch.basic_publish(
            "",
            queue,
            f"foreign {CLEAR}".encode(),
            pika.BasicProperties(
                delivery_mode=2,
                message_id=foreign_id,
                headers={"source-row": CLEAR, "run-id": TITLE, "source-file": RLO},
            ),
        )
    finally:
        conn.close()
    code, out, err = _run(
        "work",
        "--name",
        "w1",
        "--shell",
        "--exec",
        ECHO_OR_FAIL,
        "--max-attempts",
        "1",
        "--max-tasks",
        "3",
        env=env,
    )
    assert code == 0, err
    _assert_safe("work", out + err)
    assert "\\x1b]0;owned\\x07" in out + err, out + err
    # The dead-letter queue exists now: a foreign dead letter whose every part is escapes.
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        conn.channel().basic_publish(
            "",
            f"{queue}.dead",
            TITLE.encode(),
            pika.BasicProperties(
                message_id=foreign_id,
                headers={"x-failure-reason": f"{CLEAR}{RLO}why", "source-row": TITLE},
            ),
        )
    finally:
        conn.close()

    done = [e for e in events(logs / "worker-w1.log") if e["event"] == "done"]
    assert {e["task"] for e in done} >= {foreign_id}  # the log reads back the exact id
    assert any(e.get("output", "").startswith(HOSTILE) for e in done), done
    for path in sorted(logs.glob("*.log")):  # (logs/results/ holds outputs byte-exact)
        _assert_safe(path.name, path.read_bytes().decode("utf-8"))

    # --all: the foreign message's run-id header names a "run" of its own, later than ours.
    code, out, err = _run("tasks", "report", "--all", env=env)
    _assert_safe("tasks report", out + err)
    assert "\\x1b]0;owned" in out, out
    code, out, err = _run("tasks", "report", "--all", "--json", env=env)
    _assert_safe("tasks report --json", out + err)
    doc = json.loads(out)
    assert HOSTILE in [t["body"] for r in doc["runs"] for t in r["tasks"]]
    for args in (("report", "--all", "--source", "broker"), ("status",), ("dead",)):
        code, out, err = _run("tasks", *args, env=env)
        _assert_safe(f"tasks {' '.join(args)}", out + err)
    assert "reason: \\x1b[2J\\u202ewhy" in out, out
    assert "task \\x1b]0;owned\\x07\\x1b[2J\\u202eid" in out, out
    assert "last: command exited with code 1; output: fail \\x1b[2J\\u202e\\x9b31m" in out, out
    (run_id,) = [r["run"] for r in doc["runs"] if r["source"]]
    code, out, err = _run("tasks", "wait", "--run", run_id, "--timeout", "30", env=env)
    assert code == 0, err
    _assert_safe("tasks wait", out + err)
