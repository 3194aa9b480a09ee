"""The worker's pieces that need no broker: its log file and its terminal lines."""

from __future__ import annotations

import threading

import pytest

import utils.logformat as logformat
from utils.logformat import EventLog, format_human, parse_line
from utils.task import Task
from worker.handlers import DotSleep, RunCommand, TaskFailed


def test_the_log_file_rotates_by_size_and_keeps_parseable_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(logformat, "MAX_BYTES", 2000)
    path = tmp_path / "worker-r.log"
    log = EventLog(path, echo=False)
    try:
        for i in range(100):
            log.event("done", worker="r", task=f"run-{i}", row=i, run="run")
    finally:
        log.close()
    files = sorted(tmp_path.glob("worker-r.log*"))
    assert [f.name for f in files][:3] == ["worker-r.log", "worker-r.log.1", "worker-r.log.2"]
    assert all(f.stat().st_size < 2200 for f in files)
    lines = [ln for f in files for ln in f.read_text().splitlines()]
    assert all(parse_line(ln) for ln in lines)


def test_the_terminal_line_puts_the_note_first_and_leaves_out_worker_and_run():
    text = format_human(
        "shutdown_warm", worker="w1", task="r-3", row=3, run="r", note="warm stop (1 of 2)"
    )
    assert text.endswith("shutdown_warm  warm stop (1 of 2) task=r-3 row=3")
    assert "worker=" not in text and "run=" not in text


def test_exec_without_shell_passes_the_body_as_data_and_fails_on_non_zero_exit(tmp_path):
    task = Task("a; touch x $(touch y)", "t-1", 1, "r")
    out = RunCommand("cat").__call__(task, threading.Event())
    assert out == "a; touch x $(touch y)"
    with pytest.raises(TaskFailed, match="exited with code 3"):
        RunCommand("sh -c 'exit 3'")(task, threading.Event())
    assert DotSleep(1.0).is_instant(Task("no dots", "t-2")) is True
    assert DotSleep(1.0).is_instant(Task("one.", "t-3")) is False


def test_a_value_ending_in_a_newline_stays_on_its_line():
    line = logformat.format_event("done", task="t-1", output="ok\n")
    assert "\n" not in line and parse_line(line)["output"] == "ok\n"
