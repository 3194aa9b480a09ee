"""The analysis of one run: per-worker figures, the audit, and the schedules it is held to.

The audit sets what was emitted against what was done: rows done once, more than once
(with the likeliest cause), missing, dead-lettered. The figures set the run's makespan
against what a schedule (inspector/schedule.py) could do with the same task durations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from inspector.schedule import greedy, lower_bound, lpt, round_robin
from utils.eventlog.records import UNFINISHED, Run, TaskRecord, WorkerLife
from utils.eventlog.schema import DONE, FAILED, REQUEUED
from utils.rowset import RowSet


@dataclass
class WorkerStats:
    """What one worker did in a run: tasks done, rows, busy seconds, first and last times."""

    name: str
    tasks: int = 0
    rows: list[int] = field(default_factory=list)
    busy: float = 0.0
    first_start: datetime | None = None
    last_end: datetime | None = None
    #: Its own time in the run: from when it could take the run's tasks to its last event.
    span: float = 0.0
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
    missing: RowSet  # ranges: a manifest may claim 2*10^7 rows (utils/rowset.py)
    dead: list[int | None]

    @property
    def ok(self) -> bool:
        """Nothing is missing (duplicates and dead letters are reported, not failures)."""
        return not self.missing


@dataclass
class Figures:
    """The run against what a schedule could have done with the same task durations."""

    workers: int  # every worker in the per-worker table
    busy_workers: int  # those that finished a task: the schedules are for this many
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


def summarise_run(run: Run, lives: dict[str, WorkerLife] | None = None) -> RunSummary:
    """Per-worker stats, the run's figures and the audit, from one run's records.

    lives (when and where each worker said it was ready or stopped) refine each worker's
    own time in the run; without them it runs from its first start to its last event.
    """
    tasks = sorted(run.tasks.values(), key=lambda t: (t.row is None, t.row or 0, t.task_id))
    by_worker: dict[str, WorkerStats] = {}
    starts: list[datetime] = []
    ends: list[datetime] = []
    last_seen: dict[str, datetime] = {}
    for t in tasks:
        for a in t.attempts:
            w = by_worker.setdefault(a.worker, WorkerStats(a.worker))
            starts.append(a.start)
            w.first_start = min(filter(None, (w.first_start, a.start)))
            last_seen[a.worker] = max(filter(None, (last_seen.get(a.worker), a.end, a.start)))
            if a.end is not None:
                ends.append(a.end)
                w.last_end = max(filter(None, (w.last_end, a.end)))
                w.busy += a.seconds or 0.0
            if a.outcome == DONE:
                w.tasks += 1
                if t.row is not None:
                    w.rows.append(t.row)
    makespan = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    run_end = max(ends) if ends else None
    for w in by_worker.values():
        w.span = _own_time(w, min(starts), run_end, last_seen[w.name], (lives or {}).get(w.name))
        w.utilisation = min(1.0, w.busy / w.span) if w.span > 0 else 0.0
    workers = sorted(by_worker.values(), key=lambda w: w.name)
    figures = _figures(run, tasks, makespan, len(workers), len([w for w in workers if w.tasks]))
    return RunSummary(
        run.run_id,
        workers,
        tasks,
        _audit(run, tasks),
        figures,
        _verdict(figures),
        min(starts) if starts else None,
    )


def _own_time(
    w: WorkerStats,
    run_start: datetime,
    run_end: datetime | None,
    last_seen: datetime,
    life: WorkerLife | None,
) -> float:
    """Seconds a worker was part of the run: from the run's first start (or its own
    worker_ready, when it joined later) to its last event in the run (or its stop, when
    it stopped before the run ended)."""
    assert w.first_start is not None
    begin = w.first_start
    end = last_seen
    if life is not None:
        ready = life.ready_before(w.first_start)
        if ready is not None:
            begin = max(run_start, ready)
        stop = life.stopped_after(w.first_start)
        if stop is not None and run_end is not None and stop <= run_end:
            end = max(end, stop)
    return max(0.0, (end - begin).total_seconds())


def _figures(
    run: Run, tasks: list[TaskRecord], makespan: float, workers: int, busy_workers: int
) -> Figures:
    # The best schedules for the emitted order, measured in the units the run used:
    # each task's own measured seconds from its first successful attempt.
    order = run.emitted.get("order", "file")
    timed = [t for t in tasks if t.done]
    if order == "longest-first":
        timed.sort(key=lambda t: (-t.dots, t.row or 0))  # the emitter's stable sort
    durations = [t.done[0].seconds or 0.0 for t in timed]
    n = max(1, busy_workers)
    return Figures(
        workers=workers,
        busy_workers=n,
        makespan=makespan,
        lower_bound=lower_bound(durations, n),
        greedy=greedy(durations, n).makespan if durations else 0.0,
        lpt=lpt(durations, n).makespan if durations else 0.0,
        round_robin=round_robin(durations, n),
        order=order,
    )


#: Ratios are written as a multiple with this sign ("1.89 times the greedy schedule"),
#: never as a percentage.
TIMES = "\N{MULTIPLICATION SIGN}"


def times(ratio: float) -> str:
    """A ratio as a multiple, such as 1.89 followed by the multiplication sign."""
    return f"{ratio:.2f}{TIMES}"


def _verdict(f: Figures) -> str:
    target, name = (f.greedy, "greedy") if f.order == "file" else (f.lpt, "LPT")
    if not f.makespan or not target:
        return "no finished tasks to judge"
    text = f"fair dispatch: {times(f.makespan / target)} the {name} schedule for this order"
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
        rows = RowSet.of(t.row for t in tasks if t.row is not None)
    missing = rows.without(done_rows | dead_rows)
    dead = sorted((t.row for t in tasks if t.dead_lettered), key=lambda r: r or 0)
    return Audit(len(rows) or len(tasks), once, dups, again, missing, dead)


def _lost_ack(t: TaskRecord, run: Run) -> str | None:
    if t.ack_lost:
        return "redelivered after a lost ack (the worker's connection dropped before its ack)"
    return None


def _consumer_timeout(t: TaskRecord, run: Run) -> str | None:
    timed_out = [a.worker for a in t.attempts if a.reason == "consumer_timeout"]
    if timed_out:
        return (
            f"the broker's consumer_timeout ran out while worker {timed_out[0]} ran it: the "
            "broker gave it to the queue again, and the worker stopped it"
        )
    return None


def _worker_stopped_mid_task(t: TaskRecord, run: Run) -> str | None:
    cut = [a.worker for a in t.attempts[:-1] if a.outcome == UNFINISHED]
    if cut:
        return (
            f"redelivered after worker {cut[0]} stopped mid-task (killed, or its connection died)"
        )
    return None


def _cold_stop(t: TaskRecord, run: Run) -> str | None:
    if any(a.outcome == REQUEUED for a in t.attempts):
        return "given back by a cold stop, then redone"
    return None


def _failed(t: TaskRecord, run: Run) -> str | None:
    return "failed and retried" if any(a.outcome == FAILED for a in t.attempts) else None


def _republished(t: TaskRecord, run: Run) -> str | None:
    if run.republished and not any(a.redelivered for a in t.attempts[1:]):
        return "republished by the emitter after a lost connection (unconfirmed when it dropped)"
    return None


def _broker_redelivered(t: TaskRecord, run: Run) -> str | None:
    if any(a.redelivered for a in t.attempts):
        return "redelivered by the broker (a consumer's channel closed before its ack)"
    return None


#: The rules that name why a task was delivered again, in order: the first that answers
#: wins (docs/REPORT.md lists them). A new cause is one more function in this list.
CAUSES: list[Callable[[TaskRecord, Run], str | None]] = [
    _lost_ack,
    _consumer_timeout,
    _worker_stopped_mid_task,
    _cold_stop,
    _failed,
    _republished,
    _broker_redelivered,
]


def _cause(t: TaskRecord, run: Run) -> str:
    """The likeliest reason a task was delivered again, from what the logs show."""
    for rule in CAUSES:
        cause = rule(t, run)
        if cause:
            return cause
    return "unknown: the logs show no cause"


@dataclass
class UntrackedSummary:
    """Deliveries of messages other tools published (no run id), counted."""

    tasks: list[TaskRecord]
    deliveries: int = 0
    done: int = 0
    failed: int = 0
    given_back: int = 0
    unfinished: int = 0
    redeliveries: int = 0
    done_by: dict[str, int] = field(default_factory=dict)


def summarise_untracked(run: Run) -> UntrackedSummary:
    """Count what the workers did with messages that belong to no run."""
    tasks = sorted(
        run.tasks.values(),
        key=lambda t: (t.attempts[0].start.isoformat() if t.attempts else "", t.task_id),
    )
    u = UntrackedSummary(tasks)
    for t in tasks:
        for a in t.attempts:
            u.deliveries += 1
            u.redeliveries += a.redelivered
            if a.outcome == DONE:
                u.done += 1
                u.done_by[a.worker] = u.done_by.get(a.worker, 0) + 1
            elif a.outcome == UNFINISHED:
                u.unfinished += 1
            elif a.outcome == REQUEUED:
                u.given_back += 1
            else:
                u.failed += 1
    return u


def worker_rows(summary: RunSummary) -> dict[str, list[int]]:
    """Which rows each worker finished, for tests and the demo."""
    out: dict[str, list[int]] = defaultdict(list)
    for t in summary.tasks:
        for a in t.done:
            if t.row is not None:
                out[a.worker].append(t.row)
    return dict(out)
