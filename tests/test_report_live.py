"""`tasks report` on the logs of real runs against the real broker."""

from __future__ import annotations

import json
from pathlib import Path

from inspector import timeline
from inspector.analysis import summarise_run
from inspector.runs import latest_run, read_logs
from tests.helpers import Proc, events, run, spawn, stop_when_done, wait_for_event


def worker(env: dict[str, str], tmp_path: Path, name: str, spd: str, *extra: str) -> Proc:
    """A `work` process named name, at spd seconds per dot."""
    args = ("--name", name, "--seconds-per-dot", spd, *extra)
    return spawn("work", *args, env=env, out=tmp_path / f"{name}.out")


def test_report_of_a_real_run_matches_the_worker_logs_and_its_json(env, logs, tmp_path):
    procs = [worker(env, tmp_path, f"w{i}", "0.01") for i in (1, 2, 3)]
    for i, p in enumerate(procs, start=1):
        wait_for_event(logs / f"worker-w{i}.log", "worker_ready", alive=p)
    assert run("emit", "tasks.csv", env=env).returncode == 0
    stop_when_done(procs, logs, 20)

    # What each worker's own log says it finished, straight from the lines.
    said = {
        f"w{i}": sorted(
            int(e["row"]) for e in events(logs / f"worker-w{i}.log") if e["event"] == "done"
        )
        for i in (1, 2, 3)
    }
    assert sorted(r for rows in said.values() for r in rows) == list(range(1, 21))

    png = tmp_path / "timeline.png"
    r = run("tasks", "report", "--json", "--timeline", str(png), env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (one,) = doc["runs"]
    assert {w["name"]: w["rows"] for w in one["workers"]} == said
    assert {t["row"]: t["worker"] for t in one["tasks"]} == {
        row: w for w, rows in said.items() for row in rows
    }
    audit = one["audit"]
    assert audit["done_once"] == list(range(1, 21)) and audit["ok"]
    assert audit["missing"] == [] and audit["duplicates"] == [] and audit["dead_lettered"] == []
    assert doc["skipped"] == []

    text = run("tasks", "report", env=env)
    assert text.returncode == 0, text.stderr
    for w in one["workers"]:
        assert f"{w['name']:<20} {w['tasks']:>5}" in text.stdout
    assert "audit: 20 emitted, 20 done once, 0 done more than once, 0 missing" in text.stdout

    # The picture: a real PNG, and one bar per task in the figure it was drawn from.
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    fig = timeline.figure(summarise_run(latest_run(read_logs(logs))))
    assert timeline.bar_count(fig) == 20
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["w1", "w2", "w3"]


def test_report_lists_the_task_of_a_killed_worker_as_redelivered_and_nothing_missing(
    env, logs: Path, tmp_path
):
    a = worker(env, tmp_path, "a", "5")
    wait_for_event(logs / "worker-a.log", "worker_ready", alive=a)
    assert run("emit", "--message", "doomed ...", env=env).returncode == 0
    (start,) = wait_for_event(logs / "worker-a.log", "started", alive=a)
    a.kill()  # SIGKILL mid-task: no ack, no log line
    b = worker(env, tmp_path, "b", "0.01", "--max-tasks", "1")
    assert b.wait() == 0, b.output()

    r = run("tasks", "report", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    audit = json.loads(r.stdout)["runs"][0]["audit"]
    assert audit["missing"] == [] and audit["duplicates"] == []
    (again,) = audit["redelivered"]
    assert again["task"] == start["task"] and again["workers"] == ["a", "b"]
    assert "worker a stopped mid-task" in again["cause"]

    text = run("tasks", "report", "--timeline", "-", env=env).stdout
    assert "redelivered: row 1" in text and "0 missing" in text
    assert "(unfinished)" in text
