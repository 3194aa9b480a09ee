"""The analysis of one run: per-worker figures, the audit, and the schedules it is held to.

The audit sets what was emitted against what was done: rows done once, more than once
(with the likeliest cause), missing, dead-lettered. The figures set the run's makespan
against what a schedule (inspector/schedule.py) could do with the same task durations.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from inspector.runs import Run, TaskRecord
from inspector.schedule import greedy, lower_bound, lpt, round_robin


@dataclass
class WorkerStats:
    """What one worker did in a run: tasks done, rows, busy seconds, first and last times."""

    name: str
    tasks: int = 0
    rows: list[int] = field(default_factory=list)
    busy: float = 0.0
    first_start: datetime | None = None
    last_end: datetime | None = None
    utilisation: float = 0.0


@dataclass
class Redelivery:
    """A task that was delivered more than once, and what the logs say caused it."""

    row: int | None
    task_id: str
    times_done: int
    workers: list[str]
    cause: str


@dataclass
class Audit:
    """What was emitted set against what was done: once, more than once, missing, dead."""

    emitted: int
    once: list[int]
    duplicates: list[Redelivery]  # done more than once
    redelivered: list[Redelivery]  # delivered more than once but done once
    missing: list[int]
    dead: list[int | None]

    @property
    def ok(self) -> bool:
        """Nothing is missing (duplicates and dead letters are reported, not failures)."""
        return not self.missing


@dataclass
class Figures:
    """The run against what a schedule could have done with the same task durations."""

    workers: int
    makespan: float
    lower_bound: float
    greedy: float
    lpt: float
    round_robin: float
    order: str

    def ratio(self, figure: float) -> float | None:
        """The makespan as a multiple of figure (None when either is 0)."""
        return self.makespan / figure if self.makespan and figure else None


@dataclass
class RunSummary:
    """The facts `tasks report` shows, for one run."""

    run_id: str
    workers: list[WorkerStats]
    tasks: list[TaskRecord]
    audit: Audit
    figures: Figures
    verdict: str
    start: datetime | None = None


def summarise_run(run: Run) -> RunSummary:
    """Per-worker stats, the run's figures and the audit, from one run's records."""
    tasks = sorted(run.tasks.values(), key=lambda t: (t.row is None, t.row or 0, t.task_id))
    by_worker: dict[str, WorkerStats] = {}
    starts: list[datetime] = []
    ends: list[datetime] = []
    for t in tasks:
        for a in t.attempts:
            w = by_worker.setdefault(a.worker, WorkerStats(a.worker))
            starts.append(a.start)
            w.first_start = min(filter(None, (w.first_start, a.start)))
            if a.end is not None:
                ends.append(a.end)
                w.last_end = max(filter(None, (w.last_end, a.end)))
                w.busy += a.seconds or 0.0
            if a.outcome == "done":
                w.tasks += 1
                if t.row is not None:
                    w.rows.append(t.row)
    makespan = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    for w in by_worker.values():
        w.utilisation = w.busy / makespan if makespan > 0 else 0.0
    workers = sorted(by_worker.values(), key=lambda w: w.name)
    figures = _figures(run, tasks, makespan, len([w for w in workers if w.tasks]))
    return RunSummary(
        run.run_id,
        workers,
        tasks,
        _audit(run, tasks),
        figures,
        _verdict(figures),
        min(starts) if starts else None,
    )


def _figures(run: Run, tasks: list[TaskRecord], makespan: float, busy_workers: int) -> Figures:
    # The best schedules for the emitted order, measured in the units the run used:
    # each task's own measured seconds from its first successful attempt.
    order = run.emitted.get("order", "file")
    timed = [t for t in tasks if t.done]
    if order == "longest-first":
        timed.sort(key=lambda t: (-t.dots, t.row or 0))  # the emitter's stable sort
    durations = [t.done[0].seconds or 0.0 for t in timed]
    n = max(1, busy_workers)
    return Figures(
        workers=n,
        makespan=makespan,
        lower_bound=lower_bound(durations, n),
        greedy=greedy(durations, n).makespan if durations else 0.0,
        lpt=lpt(durations, n).makespan if durations else 0.0,
        round_robin=round_robin(durations, n),
        order=order,
    )


def _verdict(f: Figures) -> str:
    target, name = (f.greedy, "greedy") if f.order == "file" else (f.lpt, "LPT")
    if not f.makespan or not target:
        return "no finished tasks to judge"
    pct = (f.makespan / target - 1) * 100
    text = f"fair dispatch: within {max(pct, 0):.0f}% of the {name} schedule for this order"
    if f.round_robin > f.makespan * 1.01:
        saved = f.round_robin - f.makespan
        text += f"; {saved:.2f} s faster than round robin would have been"
    return text


def _audit(run: Run, tasks: list[TaskRecord]) -> Audit:
    rows = run.rows
    done_rows = {t.row for t in tasks if t.done and t.row is not None}
    dead_rows = {t.row for t in tasks if t.dead_lettered}
    once = sorted(t.row for t in tasks if len(t.done) == 1 and t.row is not None)
    dups: list[Redelivery] = []
    again: list[Redelivery] = []
    for t in tasks:
        if not t.redelivered and len(t.done) < 2:
            continue
        r = Redelivery(
            t.row, t.task_id, len(t.done), [a.worker for a in t.attempts], _cause(t, run)
        )
        (dups if len(t.done) > 1 else again).append(r)
    if not rows:  # the emitter's lines are gone: judge by the tasks we saw
        rows = sorted(t.row for t in tasks if t.row is not None)
    missing = [r for r in rows if r not in done_rows and r not in dead_rows]
    dead = sorted((t.row for t in tasks if t.dead_lettered), key=lambda r: r or 0)
    return Audit(len(rows) or len(tasks), once, dups, again, missing, dead)


def _cause(t: TaskRecord, run: Run) -> str:
    """The likeliest reason a task was delivered again, from what the logs show."""
    if t.ack_lost:
        return "redelivered after a lost ack (the worker's connection dropped before its ack)"
    timed_out = [a.worker for a in t.attempts if a.reason == "consumer_timeout"]
    if timed_out:
        return (
            f"the broker's consumer_timeout ran out while worker {timed_out[0]} ran it: the "
            "broker gave it to the queue again, and the worker stopped it"
        )
    if any(a.outcome == "unfinished" for a in t.attempts[:-1]):
        dead = next(a.worker for a in t.attempts[:-1] if a.outcome == "unfinished")
        return f"redelivered after worker {dead} stopped mid-task (killed, or its connection died)"
    if any(a.outcome == "requeued" for a in t.attempts):
        return "given back by a cold stop, then redone"
    if any(a.outcome == "failed" for a in t.attempts):
        return "failed and retried"
    if run.republished and not any(a.redelivered for a in t.attempts[1:]):
        return "republished by the emitter after a lost connection (unconfirmed when it dropped)"
    if any(a.redelivered for a in t.attempts):
        return "redelivered by the broker (a consumer's channel closed before its ack)"
    return "unknown: the logs show no cause"


def worker_rows(summary: RunSummary) -> dict[str, list[int]]:
    """Which rows each worker finished, for tests and the demo."""
    out: dict[str, list[int]] = defaultdict(list)
    for t in summary.tasks:
        for a in t.done:
            if t.row is not None:
                out[a.worker].append(t.row)
    return dict(out)
