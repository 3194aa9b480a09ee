"""`tasks report` on small synthetic logs: pure parsing and schedule figures, no broker."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from inspector import timeline
from inspector.analysis import TIMES, summarise_run
from inspector.cli import main
from inspector.runs import all_runs, latest_run, read_logs
from inspector.schedule import greedy, lower_bound, lpt, round_robin
from inspector.timeline import text_timeline
from tests.helpers import no_traceback, run
from utils.eventlog.format import format_event
from utils.eventlog.records import Run

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
R1, R2 = "20260101T120000-aaaa", "20260101T130000-bbbb"


def line(at: float, event: str, **fields: object) -> str:
    """A log line `at` seconds after T0, in the real format."""
    ts = (T0 + timedelta(seconds=at)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return re.sub(r"^ts=\S+", f"ts={ts}", format_event(event, **fields))


def task(run: str, row: int) -> dict[str, object]:
    return {"task": f"{run}-{row}", "row": row, "run": run}


def started(at: float, worker: str, run: str, row: int, redelivered: bool = False) -> str:
    return line(
        at,
        "started",
        worker=worker,
        **task(run, row),
        dots=row,
        attempt=1,
        redelivered=redelivered,
        body=f"Task {row} with a rather long body text",
    )


def done(at: float, worker: str, run: str, row: int, seconds: float) -> str:
    return line(at, "done", worker=worker, **task(run, row), seconds=seconds, attempt=1)


def write(path: Path, lines: list[str], tail: str = "\n") -> None:
    path.write_text("\n".join(lines) + tail)


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    """Run 1: row 1 fine, row 2 twice (lost ack), row 3 redelivered after a worker died,
    row 4 dead-lettered, row 5 never done. Run 2: two rows, both fine. Plus a garbled
    line, a truncated last line and a rotated file."""
    d = tmp_path / "logs"
    d.mkdir()
    write(
        d / "emitter.log",
        [
            line(0, "emit_started", run=R1, source="t.csv", queue="q", order="file", total=5),
            line(0, "emit_done", run=R1, queue="q", rows="1-5", total=5, republished=0),
            line(3600, "emit_started", run=R2, source="u.csv", queue="q", order="file", total=2),
            line(3600, "emit_done", run=R2, queue="q", rows="1-2", total=2, republished=0),
        ],
    )
    # worker b's older lines were rotated into worker-b.log.1
    write(
        d / "worker-b.log.1",
        [
            started(0, "b", R1, 2),
            done(2, "b", R1, 2, 2.0),
            line(2, "ack_lost", worker="b", **task(R1, 2)),
        ],
    )
    write(d / "worker-b.log", [started(4, "b", R1, 3, True), done(5, "b", R1, 3, 1.0)])
    write(
        d / "worker-a.log",
        [
            line(-1, "worker_ready", worker="a", queue="q"),
            started(0, "a", R1, 1),
            done(1, "a", R1, 1, 1.0),
            started(1, "a", R1, 3),  # a was killed here: no done
            "this line is garbage",
            started(2, "a", R1, 2, True),
            done(4, "a", R1, 2, 2.0),
            started(4, "a", R1, 4),
            line(4.5, "failed", worker="a", **task(R1, 4), attempt=1, reason="boom"),
            line(4.5, "dead_lettered", worker="a", **task(R1, 4), queue="q.dead", reason="boom"),
            started(3600, "a", R2, 1),
            done(3601, "a", R2, 1, 1.0),
            started(3601, "a", R2, 2),
            done(3602, "a", R2, 2, 1.0),
            'ts=2026-01-01T13:00:03.000Z event=done worker=a task="cut',
        ],
        tail="",
    )
    return d


def test_a_runs_rows_come_from_the_emitters_range_else_from_its_total():
    assert Run("r", {"rows": "3-5", "total": "3"}).rows == [3, 4, 5]
    assert Run("r", {"rows": "none", "total": "0"}).rows == []
    assert Run("r", {"total": "2"}).rows == [1, 2]
    assert Run("r", {}).rows == []


def test_two_runs_in_one_folder_are_told_apart_and_the_latest_is_the_default(two_runs):
    logs = read_logs(two_runs)
    assert [r.run_id for r in all_runs(logs)] == [R1, R2]
    latest = latest_run(logs)
    assert latest is not None and latest.run_id == R2
    s = summarise_run(latest)
    assert s.audit.once == [1, 2] and s.audit.missing == [] and s.audit.duplicates == []


def test_audit_names_the_duplicate_the_redelivery_the_dead_letter_and_the_missing_row(two_runs):
    s = summarise_run(read_logs(two_runs).runs[R1])
    au = s.audit
    assert au.emitted == 5
    assert au.once == [1, 3]
    assert [(d.row, d.times_done, d.workers) for d in au.duplicates] == [(2, 2, ["b", "a"])]
    assert "lost ack" in au.duplicates[0].cause
    assert [(d.row, d.workers) for d in au.redelivered] == [(3, ["a", "b"])]
    assert "worker a stopped mid-task" in au.redelivered[0].cause
    assert au.dead == [4]
    assert au.missing == [5]


def test_garbled_and_truncated_lines_are_skipped_and_named_with_a_reason(two_runs):
    skipped = {(s.file, s.line): s.why for s in read_logs(two_runs).skipped}
    assert "not a log line in our format" in skipped[("worker-a.log", 5)]
    assert "truncated last line" in skipped[("worker-a.log", 15)]
    assert len(skipped) == 2


def test_rotated_files_are_read_with_the_current_one(two_runs):
    rec = read_logs(two_runs).runs[R1].tasks[f"{R1}-2"]
    assert [a.worker for a in rec.attempts] == ["b", "a"]  # b's attempt is in worker-b.log.1


def test_worker_stats_give_busy_seconds_utilisation_and_first_and_last_times(two_runs):
    s = summarise_run(read_logs(two_runs).runs[R1])
    assert s.figures.makespan == 5.0
    a, b = s.workers
    assert (a.name, a.tasks, a.busy) == ("a", 2, 3.5)  # rows 1 and 2 done; 4 failed after 0.5
    assert (b.name, b.tasks, b.busy) == ("b", 2, 3.0)
    assert b.utilisation == pytest.approx(0.6)
    assert a.first_start == T0 and b.last_end == T0 + timedelta(seconds=5)


def test_figures_compare_the_run_with_greedy_lpt_round_robin_and_the_lower_bound(tmp_path):
    # Durations 3,1,1,1,2 on 2 workers, run exactly as greedy fair dispatch would:
    # w0 takes row 1 (0-3) and row 5 (3-5); w1 takes rows 2, 3, 4 (0-1, 1-2, 2-3).
    d = tmp_path / "logs"
    d.mkdir()
    plan = {"w0": [(1, 0, 3), (5, 3, 2)], "w1": [(2, 0, 1), (3, 1, 1), (4, 2, 1)]}
    write(d / "emitter.log", [line(0, "emit_done", run=R1, rows="1-5", total=5, order="file")])
    for w, jobs in plan.items():
        lines = []
        for row, start, secs in jobs:
            lines += [started(start, w, R1, row), done(start + secs, w, R1, row, secs)]
        write(d / f"worker-{w}.log", lines)
    f = summarise_run(read_logs(d).runs[R1]).figures
    assert (f.makespan, f.greedy, f.lower_bound, f.lpt, f.round_robin) == (5, 5, 4, 4, 6)
    assert f.ratio(f.greedy) == 1.0 and f.ratio(f.round_robin) == pytest.approx(5 / 6)
    verdict = summarise_run(read_logs(d).runs[R1]).verdict
    assert f"1.00{TIMES} the greedy schedule" in verdict


def test_report_exits_1_and_lists_what_is_missing(two_runs):
    r = CliRunner().invoke(main, ["report", "--logs-only", str(two_runs), "--run", R1])
    assert r.exit_code == 1, r.output
    assert "missing rows: 5" in r.output
    assert "duplicate: row 2" in r.output and "redelivered: row 3" in r.output
    assert "dead-lettered rows: 4" in r.output
    assert "skipped worker-a.log:5: not a log line" in r.output
    assert "round robin" in r.output and "lower bound" in r.output


def test_report_all_shows_every_run_and_latest_alone_exits_0(two_runs):
    r = CliRunner().invoke(main, ["report", "--logs-only", str(two_runs), "--all"])
    assert r.exit_code == 1 and f"run {R1}" in r.output and f"run {R2}" in r.output
    r = CliRunner().invoke(main, ["report", "--logs-only", str(two_runs)])
    assert r.exit_code == 0 and f"run {R1}" not in r.output


def test_wait_returns_when_every_task_is_done_and_gives_up_while_one_is_missing(two_runs):
    r = CliRunner().invoke(main, ["wait", str(two_runs)])
    assert r.exit_code == 0 and f"run {R2}: all 2 tasks done" in r.output
    r = CliRunner().invoke(main, ["wait", str(two_runs), "--run", R1, "--timeout", "0"])
    assert r.exit_code == 1 and "gave up after 0 s" in r.output and "hint:" in r.output


def test_json_and_csv_hold_the_same_facts_as_the_text(two_runs):
    r = CliRunner().invoke(main, ["report", "--logs-only", str(two_runs), "--all", "--json"])
    doc = json.loads(r.stdout)
    assert doc["schema"] == 2 and [x["run"] for x in doc["runs"]] == [R1, R2]
    run1 = doc["runs"][0]
    assert run1["audit"]["missing"] == [5] and run1["audit"]["dead_lettered"] == [4]
    assert run1["audit"]["duplicates"][0]["row"] == 2 and not run1["audit"]["ok"]
    by_row = {t["row"]: t for t in run1["tasks"]}
    assert by_row[3]["worker"] == "b" and by_row[3]["attempts"] == 2 and by_row[3]["redelivered"]
    assert {w["name"]: w["rows"] for w in run1["workers"]} == {"a": [1, 2], "b": [2, 3]}
    assert run1["figures"]["makespan"] == 5.0
    assert {(s["file"], s["line"]) for s in doc["skipped"]} == {
        ("worker-a.log", 5),
        ("worker-a.log", 15),
    }

    r = CliRunner().invoke(main, ["report", "--logs-only", str(two_runs), "--run", R1, "--csv"])
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 7  # 6 deliveries + row 5, never started
    assert [x["outcome"] for x in rows if x["row"] == "5"] == ["missing"]
    assert [x["worker"] for x in rows if x["row"] == "3"] == ["a", "b"]


def test_text_timeline_has_one_line_per_worker_and_marks_the_lower_bound(two_runs):
    s = summarise_run(read_logs(two_runs).runs[R1])
    lines = text_timeline(s, width=50).splitlines()
    assert lines[0].startswith("a ") and "|1=" in lines[0] and "|3?" in lines[0]
    assert lines[1].startswith("b ") and "|2" in lines[1]
    assert "^ lower bound" in lines[2]


def test_timeline_figure_has_one_bar_per_delivery_and_a_lower_bound_line(two_runs, tmp_path):
    s = summarise_run(read_logs(two_runs).runs[R1])
    fig = timeline.save(s, tmp_path / "t.svg")
    assert timeline.bar_count(fig) == 6
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert any(list(line.get_xdata()) == [s.figures.lower_bound] * 2 for line in ax.get_lines())
    assert (tmp_path / "t.svg").read_text().startswith("<?xml")


def test_unreadable_folders_and_bad_options_give_a_clear_error_not_a_traceback(tmp_path):
    (tmp_path / "worker-x.log").write_bytes(b"\xff\xfe garbage\n\x00\x00\n")
    cases = [
        ([str(tmp_path)], 1, "no log lines about any run"),
        ([str(tmp_path / "none")], 1, "no log folder"),
        ([str(tmp_path), "--timeline", "t.jpg"], 2, ".png or .svg"),
        ([str(tmp_path), "--run", "nope"], 1, "no log lines about run nope"),
    ]
    for args, code, message in cases:
        r = CliRunner().invoke(main, ["report", "--logs-only", *args])
        # Our exit, with our code: no other exception escaped the command.
        assert isinstance(r.exception, SystemExit) and r.exit_code == code, (args, r.output)
        error, hint = r.output.splitlines()
        assert error.startswith("error: ") and message in error, args
        assert hint.startswith("  hint: "), args


# Bad report arguments, and the schedules fair dispatch is compared with.


def test_tasks_report_on_an_empty_folder_says_what_to_do(offline_env, tmp_path):
    r = run("tasks", "report", str(tmp_path), env=offline_env)
    assert r.returncode == 1
    assert "no log lines" in r.stderr and "emit" in r.stderr and no_traceback(r.stderr)


def test_tasks_report_for_an_unknown_run_says_so(env, logs):
    assert run("emit", "--message", "x", env=env).returncode == 0
    r = run("tasks", "report", str(logs), "--run", "no-such-run", env=env)
    assert r.returncode == 1 and "no-such-run" in r.stderr and no_traceback(r.stderr)


def test_greedy_schedule_gives_each_task_to_the_first_free_worker():
    s = greedy([3, 1, 1, 1, 2], 2)
    assert s.assignment == (0, 1, 1, 1, 0)
    assert s.makespan == 5
    assert lower_bound([3, 1, 1, 1, 2], 2) == 4
    assert lpt([1, 1, 3], 2).makespan == 3


def test_fair_dispatch_beats_round_robin_on_the_sample_tasks():
    from tests.helpers import ROOT

    dots = [line.count(".") for line in (ROOT / "tasks.csv").read_text().splitlines()]
    assert 18 <= len(dots) <= 22 and min(dots) == 1 and max(dots) == 10
    assert greedy(dots, 3).makespan < round_robin(dots, 3) * 0.8


HOSTILE_VALUES = [
    "seconds=inf",
    "seconds=1e308",
    "seconds=99999999999",
    "seconds=-2",
    "seconds=1 row=99999999999999999999999999",
    "seconds=1 attempt=99999999999999999999999999",
]


def test_hostile_numbers_and_times_in_a_line_are_skipped_and_named_never_a_crash(logs, offline_env):
    d = logs
    emit = [
        line(0, "emit_started", run=R1, source="t.csv", queue="q", order="file", total=2),
        line(0, "emit_done", run=R1, queue="q", rows="1-2", total=2, republished=0),
    ]
    write(d / "emitter.log", emit)
    hostile = [
        f"ts=2026-01-01T12:00:01.000Z event=done worker=a task={R1}-1 row=1 run={R1} {v}"
        for v in HOSTILE_VALUES
    ]
    hostile.append(f"ts=0001-01-01T00:00:00.000Z event=done worker=a task={R1}-1 row=1 run={R1}")
    hostile.append(f"ts=2199-01-01T00:00:00.000Z event=done worker=a task={R1}-1 row=1 run={R1}")
    write(d / "worker-a.log", [started(1, "a", R1, 2), done(2, "a", R1, 2, 1.0), *hostile])
    r = run("tasks", "report", "--logs-only", str(d), env={**offline_env, "TASK_QUEUE": "q"})
    assert no_traceback(r.stderr) and "unexpected" not in r.stderr, r.stderr
    assert r.returncode == 1, r.stderr  # row 1 is missing: none of the hostile lines counts
    for v in HOSTILE_VALUES:
        assert v.split()[-1][:20] in r.stderr, r.stderr
    skipped = [s for s in r.stderr.splitlines() if s.startswith("skipped worker-a.log")]
    assert len(skipped) == len(hostile), r.stderr
    s = summarise_run(read_logs(d).runs[R1])
    assert s.audit.once == [2] and s.audit.missing == [1]
    assert all(w.busy >= 0 for w in s.workers)


def test_a_body_with_terminal_escapes_is_printed_escaped_by_tasks_report(logs, offline_env):
    body = "\x1b]0;owned\x07\x1b[2J\u202eevil"
    write(
        logs / "emitter.log",
        [line(0, "emit_started", run=R1, source="t.csv", queue="q", order="file", total=1)],
    )
    write(
        logs / "worker-a.log",
        [
            line(1, "started", worker="a", **task(R1, 1), attempt=1, body=body),
            done(2, "a", R1, 1, 1.0),
        ],
    )
    r = run("tasks", "report", "--logs-only", str(logs), env={**offline_env, "TASK_QUEUE": "q"})
    assert r.returncode == 0, r.stderr
    assert "\\x1b]0;owned\\x07" in r.stdout
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", r.stdout)
