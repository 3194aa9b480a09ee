"""What a person sees in the worker's terminal: under a real pseudo-terminal, and through a pipe.

The log file keeps every field for `tasks report`; the terminal gets lines that fit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import BIN, ROOT, WAIT, events, queue_ready, run, wait_for, wait_for_event
from utils.text import prose, prose_width
from worker.terminal import Terminal, cells, colour_wanted, fit

_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
#: Fails a body with "fails" in it on its first attempt only: one retry, then done.
FAIL_ONCE = 'case "$TASK_BODY" in *fails*) [ "$TASK_ATTEMPT" = 1 ] && exit 1;; esac; true'
LONG_BODY = "Task 2 .. " + "a body far longer than any terminal line " * 3


@dataclass
class PtyProc:
    """A command whose stdin, stdout and stderr are a pseudo-terminal it controls."""

    popen: subprocess.Popen[bytes]
    master: int
    chunks: list[bytes] = field(default_factory=list)
    reader: threading.Thread | None = None

    def read_all(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self.chunks.append(data)

    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def type(self, keys: bytes) -> None:
        """Type keys on the terminal: b"\\x03" is Ctrl+C, which the TTY turns into SIGINT."""
        os.write(self.master, keys)

    def wait(self) -> int:
        code = self.popen.wait(timeout=WAIT)
        assert self.reader is not None
        self.reader.join(timeout=WAIT)
        return code


def _controlling_tty() -> None:
    # In the child, after setsid: fd 0 (the pty) becomes the session's controlling terminal,
    # so that Ctrl+C typed on it reaches the worker as SIGINT, as in a real terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def on_pty() -> Iterator[object]:
    """Start a command on a fresh pty: `on_pty("work", ..., env=env, columns=60)`."""
    started: list[PtyProc] = []

    def start(cmd: str, *args: str, env: dict[str, str], columns: int = 0) -> PtyProc:
        master, slave = os.openpty()
        # 0 columns: a terminal that does not say its width.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        popen = subprocess.Popen(
            [str(BIN / cmd), *args],
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_controlling_tty,
            cwd=env.get("PWD", str(ROOT)),
        )
        os.close(slave)
        proc = PtyProc(popen, master)
        proc.reader = threading.Thread(target=proc.read_all, daemon=True)
        proc.reader.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()
        os.close(proc.master)


def screen_lines(text: str) -> list[str]:
    """The lines a terminal shows (the pty writes \\r\\n), without colour codes."""
    return _ESCAPE.sub("", text).replace("\r\n", "\n").split("\n")


def tty_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """A colour terminal that does not say its width, in the folder above the test's logs/."""
    e = {k: v for k, v in env.items() if k not in ("NO_COLOR", "COLUMNS")}
    # A relative log folder, as a person has it: a path longer than a line stays whole.
    logs = env["TASK_LOG_DIR"]
    e.update(TERM="xterm-256color", PWD=os.path.dirname(logs), TASK_LOG_DIR="logs")
    return {**e, **extra}


def test_on_a_terminal_work_says_who_and_where_and_keeps_lines_within_80_columns(
    env, queue, logs, on_pty
):
    w = on_pty("work", "--name", "tty1", "--exec", FAIL_ONCE, "--shell", env=tty_env(env))
    log = logs / "worker-tty1.log"
    wait_for_event(log, "worker_ready")
    bodies = ["Task 1 .", LONG_BODY, "Task 3 fails"]
    assert run("emit", *(a for b in bodies for a in ("-m", b)), env=env).returncode == 0
    wait_for("rows 1..3 done", lambda: len([e for e in events(log) if e["event"] == "done"]) >= 3)
    w.type(b"\x03")  # Ctrl+C: a warm stop
    assert w.wait() == 0, w.output()
    out = w.output()
    lines = screen_lines(out)

    # Who and where, before any task: the name, the log file, the queue, the node.
    ready = out[: out.index("started")]
    assert "worker tty1" in ready and "log file logs/worker-tty1.log" in ready
    assert f"queue {queue} (quorum) at localhost:" in ready
    assert "waiting for tasks; Ctrl+C to stop" in ready

    # Every line fits a terminal that does not say its width: 80 columns.
    assert all(cells(line) <= 80 for line in lines), "\n".join(lines)
    # The time, the event, the row, the body (cut), and the seconds on done.
    assert any(re.match(r"\d\d:\d\d:\d\d started +row 1 +Task 1 \.$", x) for x in lines)
    assert any(re.match(r"\d\d:\d\d:\d\d done +row 1 +\d+\.\d\d s +Task 1 \.$", x) for x in lines)
    assert any(re.match(r".* started +row 2 +Task 2 \.\. a body far .*…$", x) for x in lines)
    # The ids and attempt=1 are for the log file; a retry names its attempt.
    assert "task=" not in out and "attempt=" not in out and "redelivered=" not in out
    tid = next(e["task"] for e in events(log) if e["event"] == "started")
    assert tid not in out
    started = [e for e in events(log) if e["event"] == "started"]
    assert started[0]["attempt"] == "1" and started[0]["redelivered"] == "false"
    assert any(re.match(r".* failed +row 3 +attempt 1 of 3: ", x) for x in lines)
    assert any(re.match(r".* retry +row 3 +runs again as attempt 2 of 3$", x) for x in lines)
    assert any(re.match(r".* started +row 3 +\(attempt 2, redelivered\) Task 3", x) for x in lines)

    # Colour for done, failed and retry; the log file has none.
    assert "\x1b[32mdone\x1b[0m" in out and "\x1b[31mfailed\x1b[0m" in out
    assert "\x1b[33mretry\x1b[0m" in out and "\x1b" not in log.read_text()

    # After Ctrl+C (echoed as ^C), the next message starts on a line of its own.
    assert re.search(r"\^C\r\n\d\d:\d\d:\d\d \x1b\[33mshutdown_warm", out), out
    assert "worker tty1: 3 done, 1 failed" in out


def test_work_fits_a_narrower_terminal_and_no_color_turns_colour_off(env, logs, on_pty):
    w = on_pty(
        "work", "--name", "tty2", "--max-tasks", "1", env=tty_env(env, NO_COLOR="1"), columns=50
    )
    wait_for_event(logs / "worker-tty2.log", "worker_ready")
    assert run("emit", "-m", LONG_BODY, env=env).returncode == 0
    assert w.wait() == 0, w.output()
    out = w.output()
    assert "\x1b" not in out
    lines = screen_lines(out)
    assert all(cells(line) <= 50 for line in lines), "\n".join(lines)
    assert any(re.match(r".* done +row 1 +\d+\.\d\d s +Task 2 .*…$", x) for x in lines)
    assert "worker tty2: 1 done" in out


def test_through_a_pipe_work_writes_plain_lines_with_no_escape_codes(env, logs):
    assert run("emit", "-m", LONG_BODY, "-m", "Task 3 fails", env=env).returncode == 0
    r = run("work", "--name", "piped", "--exec", FAIL_ONCE, "--shell", "--max-tasks", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    ready = next(x for x in lines if " worker_ready " in x)
    assert "worker piped; queue " in ready and "; waiting for tasks; Ctrl+C to stop" in ready
    assert f"log file {logs / 'worker-piped.log'}" in ready
    # One line per event, the body as the log file has it (60 characters), uncut.
    assert any(x.endswith(LONG_BODY[:59] + "…") for x in lines if " started " in x)
    assert "attempt=" not in r.stderr and "task=" not in r.stderr
    assert any(" retry " in x and "attempt 2 of 3" in x for x in lines)


def test_ctrl_c_in_emit_reading_a_terminal_ends_on_a_line_of_its_own_with_exit_130(
    env, broker_url, queue, on_pty
):
    e = on_pty("emit", "-", env=tty_env(env))
    e.type(b"typed by hand .\n")
    wait_for("the typed row in the queue", lambda: queue_ready(broker_url, queue) == 1)
    e.type(b"\x03")
    assert e.wait() == 130
    out = e.output()
    assert re.search(r"\^C\r\nerror: interrupted\r\n", out), out
    assert "Fatal Python error" not in out and "Traceback" not in out


# -- the layout itself, without a broker ------------------------------------------------------
TS = "2026-11-27T14:23:42.123Z"


def test_wide_characters_count_two_columns_when_a_body_is_cut():
    text = fit("任务" * 30, 21)
    assert cells(text) <= 21 and text.endswith("…")
    assert fit("short", 21) == "short"


def test_control_characters_in_a_body_never_reach_the_terminal():
    t = Terminal(width=80, colour=True)
    line = t.line(TS, "started", {"task": "r-1", "row": 1, "body": "a\x1b[2Jb\nc", "attempt": 1})
    assert "\x1b[2J" not in line and "\n" not in line and "a\\x1b[2Jb\\nc" in line


def test_prose_is_wrapped_to_the_terminal_it_goes_to_not_to_stdouts(monkeypatch):
    # `emit ... > out.txt` on a 57-column terminal: the notes on stderr fit those 57.
    monkeypatch.delenv("COLUMNS", raising=False)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 57, 0, 0))
    with os.fdopen(slave, "w") as tty:
        assert prose_width(tty) == 57
        monkeypatch.setenv("COLUMNS", "44")
        assert prose_width(tty) == 44
    os.close(master)
    with open(os.devnull, "w") as not_a_tty:
        assert prose_width(not_a_tty) is None


def test_prose_is_plain_text_wrapped_for_a_terminal_and_whole_into_a_file(monkeypatch):
    monkeypatch.setenv("COLUMNS", "20")
    text = "note: the queue holds more messages than this run sent\nnext line"
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        wrapped = prose(text, tty)
    os.close(master)
    assert wrapped.split("\n")[:3] == ["note: the queue", "  holds more", "  messages than this"]
    assert wrapped.endswith("\nnext line")
    with open(os.devnull, "w") as not_a_tty:
        assert prose(text, not_a_tty) == text


def test_a_long_note_wraps_under_the_text_column_within_the_width():
    t = Terminal(width=60)
    note = "warm stop (1 of 2): finishing the current task, then exiting; stop again to give it"
    text = t.line(TS, "shutdown_warm", {"task": "r-3", "row": 3, "note": note})
    lines = text.split("\n")
    assert len(lines) > 1 and all(len(x) < 60 for x in lines)
    assert all(x.startswith(" " * 23) for x in lines[1:])
    assert " ".join(x.strip() for x in lines).endswith(note)


def test_a_path_longer_than_the_line_stays_whole_on_a_line_of_its_own():
    path = "/srv/a-long-folder" * 5 + "/worker-w1.log"
    t = Terminal(width=80, log_path=Path(path))
    fields = {"worker": "w1", "queue": "q", "queue_type": "quorum", "node": "h:5672"}
    lines = t.line(TS, "worker_ready", fields).split("\n")
    assert path in [x.strip() for x in lines]
    assert all(len(x) < 80 for x in lines if path not in x)


def test_done_shows_the_body_of_its_started_line_and_the_worker_stopped_line_is_left_out():
    t = Terminal()
    t.line(TS, "started", {"task": "r-3", "row": 3, "body": "Task 3 ..", "attempt": 1})
    assert t.line(TS, "done", {"task": "r-3", "row": 3, "seconds": 2.0, "attempt": 1}).endswith(
        "done          row 3     2.00 s  Task 3 .."
    )
    assert t.line(TS, "worker_stopped", {"worker": "w1", "done": 1}) == ""


def test_a_done_with_a_note_and_a_cold_stop_requeue_are_said_whole_not_cut():
    t = Terminal(width=60)
    note = "finished earlier, but its ack was lost; acked this copy without running it again"
    done = t.line(TS, "done", {"task": "r-3", "row": 3, "seconds": 0.0, "attempt": 2, "note": note})
    assert done.split("\n")[0].endswith("row 3     0.00 s (attempt 2)")
    assert " ".join(x.strip() for x in done.split("\n")[1:]) == note
    requeued = t.line(TS, "requeued", {"row": 3, "reason": "cold stop", "note": "gave it back"})
    assert requeued.endswith("row 3     cold stop: gave it back")


@pytest.mark.parametrize(
    ("event", "sgr"),
    [("connection_lost", "31"), ("reconnect_failed", "31"), ("reconnected", "32")],
)
def test_connection_events_are_coloured_and_plain_without_colour(event, sgr):
    fields = {"worker": "w1", "reason": "gone", "node": "h:5672", "note": "reconnecting"}
    assert f"\x1b[{sgr}m{event}\x1b[0m" in Terminal(width=80, colour=True).line(TS, event, fields)
    assert "\x1b" not in Terminal(width=80, colour=False).line(TS, event, fields)


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [({}, True), ({"NO_COLOR": "1"}, False), ({"NO_COLOR": ""}, True), ({"TERM": "dumb"}, False)],
)
def test_no_color_with_any_value_turns_colour_off(environ, wanted):
    assert colour_wanted(environ) is wanted
