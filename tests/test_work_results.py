"""--exec as a job runner: each attempt's record (exit code, signal, host) and its stdout
and stderr kept whole, apart, in files under the log folder (docs/WORKER.md, "Results")."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.helpers import events, run, spawn, wait_for_event
from utils.eventlog.jobs import job_record, results_folder
from utils.task import Task
from worker.handlers import RunCommand, TaskFailed
from worker.results import TAIL_BYTES, ResultsStore

#: Writes bytes 0-255 (and a NUL, an ESC, invalid UTF-8) to stdout, other bytes to stderr.
BINARY = "python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 3); sys.stderr.buffer.write(b\"\\xff\\x1b[31merr\\x00\")'"
OUT = bytes(range(256)) * 3
ERR = b"\xff\x1b[31merr\x00"


def _store(tmp_path: Path, cap: int | None = None) -> ResultsStore:
    return ResultsStore(tmp_path / "logs", cap)


def test_stdout_and_stderr_are_kept_apart_and_byte_exact_with_their_sizes_and_sha256(tmp_path):
    task = Task("body", "r1-7", 7, "r1")
    out = RunCommand(BINARY, shell=True, results=_store(tmp_path))(task, threading.Event())
    folder = tmp_path / "logs" / "results" / "r1" / "7" / "1"
    assert (folder / "stdout").read_bytes() == OUT
    assert (folder / "stderr").read_bytes() == ERR
    job = out.job  # type: ignore[attr-defined]
    f = job.fields()
    assert f["results"] == "results/r1/7/1" and results_folder(f["results"])
    assert f["exit_code"] == 0 and f["signal"] is None and f["host"] == socket.gethostname()
    assert (f["stdout_bytes"], f["stderr_bytes"]) == (len(OUT), len(ERR))
    assert f["stdout_sha256"] == hashlib.sha256(OUT).hexdigest()
    assert f["stderr_sha256"] == hashlib.sha256(ERR).hexdigest()
    assert f["truncated"] is None
    # The same attempt run again (a redelivery to another worker on this log folder)
    # takes a folder of its own, never the first one's files.
    again = RunCommand("echo again", results=_store(tmp_path))(task, threading.Event())
    assert again.job.folder == "results/r1/7/1.2"  # type: ignore[attr-defined]
    assert (folder / "stdout").read_bytes() == OUT


def test_an_exit_code_and_a_signal_are_the_attempts_record(tmp_path):
    task = Task("x", "r1-1", 1, "r1")
    with pytest.raises(TaskFailed, match="exited with code 3") as exited:
        RunCommand("sh -c 'echo why >&2; exit 3'", results=_store(tmp_path))(
            task, threading.Event()
        )
    assert exited.value.job is not None
    assert (exited.value.job.exit_code, exited.value.job.signal) == (3, None)
    assert exited.value.output == "why"  # the failure's words: the end of its stderr
    with pytest.raises(TaskFailed, match=r"killed by signal 15 \(SIGTERM\)") as killed:
        RunCommand("sh -c 'kill -TERM $$'", results=_store(tmp_path))(task, threading.Event())
    assert killed.value.job is not None
    assert (killed.value.job.exit_code, killed.value.job.signal) == (None, signal.SIGTERM)


def test_max_output_cuts_each_file_at_the_cap_and_the_record_says_truncated(tmp_path):
    task = Task("x", "r1-2", 2, "r1")
    cmd = 'python3 -c \'import sys; sys.stdout.write("a" * 5000); sys.stderr.write("b" * 10)\''
    out = RunCommand(cmd, results=_store(tmp_path, cap=1000))(task, threading.Event())
    folder = tmp_path / "logs" / "results" / "r1" / "2" / "1"
    assert (folder / "stdout").read_bytes() == b"a" * 1000
    assert (folder / "stderr").read_bytes() == b"b" * 10  # under the cap: whole
    f = out.job.fields()  # type: ignore[attr-defined]
    assert f["stdout_bytes"] == 1000 and f["truncated"] == "stdout"
    assert f["stdout_sha256"] == hashlib.sha256(b"a" * 1000).hexdigest()
    # The command wrote exactly the cap: nothing was cut.
    exact = "python3 -c 'import sys; sys.stdout.write(\"a\" * 1000)'"
    f = RunCommand(exact, results=_store(tmp_path, cap=1000))(task, threading.Event()).job.fields()  # type: ignore[attr-defined]
    assert f["stdout_bytes"] == 1000 and f["truncated"] is None


def test_a_record_read_back_keeps_what_a_worker_writes_and_names_what_it_does_not():
    good = {
        "exit_code": "0",
        "results": "results/r1/3/1",
        "stdout_bytes": "5",
        "stdout_sha256": "a" * 64,
    }
    job = job_record(good)
    assert job is not None and job.exit_code == 0 and job.results == "results/r1/3/1"
    assert not job.problems
    assert job_record({"seconds": "1.0"}) is None  # not --exec
    bad = job_record({"exit_code": "x", "results": "results/../../etc/1", "stdout_sha256": "zz"})
    assert bad is not None and bad.results is None and bad.exit_code is None
    assert len(bad.problems) == 3
    for folder in ("/etc/passwd", "results/r/1", "results/r/../1", "results/r/1/.."):
        assert not results_folder(folder)


def _three_tasks(env: dict[str, str]) -> None:
    r = run("emit", *("--message", "ok"), *("--message", "exit3"), *("--message", "term"), env=env)
    assert r.returncode == 0, r.stderr


#: Reads its body and acts on it: exit 3, die of SIGTERM, or say ok.
DISPATCH = "read b; case $b in exit3) exit 3;; term) kill -TERM $$;; esac; echo ok $b"


def test_report_csv_and_json_give_each_attempts_exit_code_and_signal(env, logs):
    _three_tasks(env)
    w = run(
        "work",
        *("--name", "j", "--shell", "--exec", DISPATCH),
        *("--max-attempts", "2", "--max-tasks", "5", "--exit-when-idle", "5"),
        env=env,
    )
    assert w.returncode == 0, w.stderr
    r = run("tasks", "report", "--logs-only", "--csv", env=env)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    by_row: dict[str, list[tuple[str, str, str]]] = {}
    for x in rows:
        by_row.setdefault(x["row"], []).append((x["outcome"], x["exit_code"], x["signal"]))
    assert by_row == {
        "1": [("done", "0", "")],
        "2": [("failed", "3", "")] * 2,
        "3": [("failed", "", "15")] * 2,
    }
    r = run("tasks", "report", "--logs-only", "--json", env=env)
    doc = json.loads(r.stdout)
    tasks = {t["row"]: t["history"] for t in doc["runs"][0]["tasks"]}
    assert [(a["exit_code"], a["signal"]) for a in tasks[1]] == [(0, None)]
    assert [(a["exit_code"], a["signal"]) for a in tasks[2]] == [(3, None)] * 2
    assert [(a["exit_code"], a["signal"]) for a in tasks[3]] == [(None, 15)] * 2
    assert {a["host"] for h in tasks.values() for a in h} == {socket.gethostname()}
    done = tasks[1][0]["results"]
    assert (logs / done["folder"] / "stdout").read_bytes() == b"ok ok\n"
    assert done["stdout_sha256"] == hashlib.sha256(b"ok ok\n").hexdigest()
    # The attempts' log lines say the same.
    failed = [e for e in events(logs / "worker-j.log") if e["event"] == "failed"]
    assert sorted((e["row"], e.get("exit_code"), e.get("signal")) for e in failed) == [
        ("2", "3", None),
        ("2", "3", None),
        ("3", None, "15"),
        ("3", None, "15"),
    ]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


BIG = 300_000_000


@pytest.mark.slow
def test_an_output_of_300_mb_is_kept_whole_while_the_workers_peak_rss_stays_flat(
    env, logs, tmp_path
):
    # Row 1 writes a byte, row 2 writes 300 MB: the worker's peak RSS is read from /proc
    # after each, and may not grow by more than a small fraction of the output.
    r = run("emit", *("--message", "small"), *("--message", "big"), env=env)
    assert r.returncode == 0, r.stderr
    cmd = f'read b; if [ "$b" = big ]; then head -c {BIG} /dev/urandom; else printf x; fi'
    w = spawn("work", "--name", "big", "--shell", "--exec", cmd, env=env, out=tmp_path / "w.out")
    log = logs / "worker-big.log"
    wait_for_event(log, "done", alive=w, row="1")
    after_small = _peak_rss_kib(w.popen.pid)
    done = wait_for_event(log, "done", alive=w, row="2")[0]
    after_big = _peak_rss_kib(w.popen.pid)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert after_big - after_small < 20_000, (after_small, after_big)  # KiB; the output: 293,000
    stdout = logs / done["results"] / "stdout"
    assert stdout.stat().st_size == BIG == int(done["stdout_bytes"])
    sha = hashlib.sha256()
    with open(stdout, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    assert sha.hexdigest() == done["stdout_sha256"]
    assert len(done["output"]) <= 4 * TAIL_BYTES  # a short tail (escaped: up to 4 chars a byte)


def test_max_output_on_the_command_line_cuts_the_file_and_the_done_line_says_so(env, logs):
    assert run("emit", "--message", "x", env=env).returncode == 0
    cmd = "head -c 5000 /dev/zero"
    w = run(
        "work",
        *("--name", "cap", "--shell", "--exec", cmd, "--max-output", "1KB", "--max-tasks", "1"),
        env=env,
    )
    assert w.returncode == 0, w.stderr
    done = next(e for e in events(logs / "worker-cap.log") if e["event"] == "done")
    assert done["truncated"] == "stdout" and done["stdout_bytes"] == "1000"
    assert (logs / done["results"] / "stdout").read_bytes() == b"\0" * 1000
    bad = run("work", "--exec", "true", "--max-output", "lots", env=env)
    assert bad.returncode == 2 and "'lots' is not a size" in bad.stderr
    assert "Traceback" not in bad.stderr
