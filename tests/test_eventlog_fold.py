"""The one fold (utils/eventlog/fold.py): the report and the dashboard read lines alike, no broker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from inspector.dashboard.state import DashboardState
from utils.eventlog.fold import Fold, fold_events
from utils.eventlog.format import format_event, parse_line
from utils.eventlog.records import UNFINISHED, LogSet, Run
from utils.eventlog.schema import (
    DEAD_LETTERED,
    DONE,
    EMIT_DONE,
    EMIT_STARTED,
    FAILED,
    STARTED,
    WORKER_READY,
)

RUN = "20261127T100000-ab12"
T0 = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def line(second: float, event: str, **fields: object) -> dict[str, str]:
    """The fields of a log line as format_event writes it, at T0 + second."""
    ts = (T0 + timedelta(seconds=second)).isoformat(timespec="milliseconds")
    text = f"ts={ts.replace('+00:00', 'Z')} " + format_event(event, **fields).split(" ", 1)[1]
    got = parse_line(text)
    assert got is not None
    return got


def task(worker: str, row: int) -> dict[str, object]:
    return {"worker": worker, "task": f"{RUN}-{row}", "row": row, "run": RUN}


def both(events: list[dict[str, str]]) -> tuple[LogSet, DashboardState]:
    report = fold_events([("w.log", n, e) for n, e in enumerate(events, 1)], [])
    dashboard = DashboardState()
    dashboard.apply_all(events)
    return report, dashboard


def a_run() -> list[dict[str, str]]:
    out = [line(0, EMIT_STARTED, run=RUN, source="t.csv", queue="q", total=4)]
    out += [line(0.1, WORKER_READY, worker=w, queue="q") for w in ("a", "b")]
    for row, w in ((1, "a"), (2, "b"), (3, "a"), (4, "b")):
        out.append(line(row, STARTED, **task(w, row), dots=1, attempt=1, body=f"Task {row}"))
        if row == 3:
            out.append(line(row + 0.5, FAILED, **task(w, row), attempt=1, of=1, reason="boom"))
            out.append(line(row + 0.6, DEAD_LETTERED, **task(w, row), queue="q.dead", reason="x"))
        else:
            out.append(line(row + 0.5, DONE, **task(w, row), seconds=0.5, attempt=1))
    out.append(line(9, EMIT_DONE, run=RUN, queue="q", rows="1-4", total=4))
    return out


def test_the_report_and_the_dashboard_count_one_run_alike() -> None:
    report, dashboard = both(a_run())
    run = report.runs[RUN]
    view = dashboard.runs[RUN]
    done = [t for t in run.tasks.values() if t.done]
    assert (len(done), view.done) == (3, 3)
    assert sum(1 for t in run.tasks.values() if t.dead_lettered) == view.dead_lettered == 1
    assert run.emit_status == view.emit_status == "done"
    assert set(report.workers) == set(dashboard.workers) == {"a", "b"}
    # One fold: the report's attempts and the dashboard's bars are the same attempts.
    attempts = sorted((a.worker, a.row, a.outcome) for t in run.tasks.values() for a in t.attempts)
    bars = sorted((b[1], b[2], b[5]) for b in view.bars)
    assert attempts == bars


def test_a_task_that_went_to_another_worker_stays_unfinished_in_the_report_and_lost_on_the_page():
    events = [
        line(0, EMIT_STARTED, run=RUN, total=1),
        line(1, STARTED, **task("a", 1), dots=1, attempt=1, body="x"),
        line(5, STARTED, **task("b", 1), dots=1, attempt=2, redelivered=True, body="x"),
        line(6, DONE, **task("b", 1), seconds=1.0, attempt=2),
    ]
    report, dashboard = both(events)
    record = report.runs[RUN].tasks[f"{RUN}-1"]
    assert [(a.worker, a.outcome) for a in record.attempts] == [("a", UNFINISHED), ("b", DONE)]
    assert [(b[1], b[5]) for b in dashboard.runs[RUN].bars] == [("a", "lost"), ("b", DONE)]
    assert dashboard.workers["a"].gone and "went to b" in dashboard.workers["a"].gone


def test_a_done_whose_start_was_rotated_away_still_counts_in_both() -> None:
    events = [line(0, EMIT_STARTED, run=RUN, total=1), line(3, DONE, **task("a", 1), seconds=2.0)]
    report, dashboard = both(events)
    (a,) = report.runs[RUN].tasks[f"{RUN}-1"].attempts
    assert (a.outcome, a.seconds, a.start) == (DONE, 2.0, T0 + timedelta(seconds=1))
    assert dashboard.runs[RUN].done == 1
    (bar,) = dashboard.runs[RUN].bars
    assert bar[4] - bar[3] == 2.0


def test_a_line_the_fold_cannot_use_says_why() -> None:
    events = [
        line(1, STARTED, worker="a", run=RUN, dots=1, attempt=1, body="x"),  # no task=
        line(2, DONE, **task("a", 1), seconds="soon"),
    ]
    report = fold_events([("w.log", n, e) for n, e in enumerate(events, 1)], [])
    assert [(s.line, s.why) for s in report.skipped] == [
        (1, "started event without task="),
        (2, "done event with a bad value (could not convert string to float: 'soon')"),
    ]


def test_a_bounded_fold_forgets_the_oldest_run_and_worker_first() -> None:
    f: Fold[Run] = Fold(Run, max_runs=2, max_workers=2)
    for n, run_id in enumerate(("r1", "r2", "r3")):
        f.apply(T0 + timedelta(seconds=n), line(n, EMIT_STARTED, run=run_id))
    assert sorted(f.runs) == ["r2", "r3"]
    f.apply(T0, line(0, EMIT_STARTED, run="r0"))  # older than every run kept: not kept
    assert sorted(f.runs) == ["r2", "r3"]
    for n, w in enumerate(("a", "b", "c")):
        f.apply(T0 + timedelta(seconds=n), line(n, WORKER_READY, worker=w, queue="q"))
    assert sorted(f.workers) == ["b", "c"]
