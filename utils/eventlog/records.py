"""What the fold (fold.py) builds from events: runs, their tasks and attempts, worker lives.

Plain records, filled one event at a time by the fold; the report reads them whole
(inspector/analysis.py), the dashboard reads its bounded views of them
(inspector/dashboard/state.py). A Run's `on_*` methods are how the fold tells a run what
happened to its tasks: this Run keeps a record of every task, with every attempt.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from utils.eventlog.format import parse_ts
from utils.eventlog.jobs import JobRecord
from utils.eventlog.schema import DONE, EMIT_DONE, EMIT_FAILED, EMIT_STARTED
from utils.rowset import RowSet

#: How an attempt ended: the name of the event that ended it (DONE, FAILED, REQUEUED), or
#: UNFINISHED while nothing has.
UNFINISHED = "unfinished"
#: The pseudo-run that holds tasks published by other tools (no run id in their messages).
UNTRACKED = ""
#: A run's emit status (Run.emit_status), named after the line that ended the emit:
#: emit_done gives "done", emit_failed "failed".
EMIT_ENDINGS = {name: name.removeprefix("emit_") for name in (EMIT_DONE, EMIT_FAILED)}
EMIT_RUNNING = "running"
EMIT_UNKNOWN = "unknown"


@dataclass(slots=True)
class Attempt:
    """One delivery of a task to a worker, from `started` to how it ended."""

    worker: str
    start: datetime
    redelivered: bool
    attempt: int
    end: datetime | None = None
    outcome: str = UNFINISHED  # DONE, FAILED, REQUEUED or UNFINISHED
    seconds: float | None = None
    reason: str = ""  # of a failed or requeued attempt (requeued: "cold stop", "consumer_timeout")
    task: str = ""
    row: int | None = None
    run: str = UNTRACKED  # the run's id
    body: str = ""
    #: What a failure's line says: "attempt `said` of `of`" (of: --max-attempts).
    said: int | None = None
    of: int | None = None
    #: An --exec attempt's record: exit code or signal, host, its results (jobs.py).
    job: JobRecord | None = None


@dataclass
class TaskRecord:
    """Everything the logs say about one task id."""

    task_id: str
    row: int | None
    body: str = ""
    dots: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    dead_lettered: bool = False
    ack_lost: int = 0

    @property
    def done(self) -> list[Attempt]:
        """The attempts that ended in done (more than one: the task ran twice)."""
        return [a for a in self.attempts if a.outcome == DONE]

    @property
    def redelivered(self) -> bool:
        """Delivered more than once, or flagged as a redelivery by the broker."""
        return len(self.attempts) > 1 or any(a.redelivered for a in self.attempts)


@dataclass
class Run:
    """One emit run: what its emit lines say, and every task's record with its attempts."""

    run_id: str
    emitted: dict[str, str] = field(default_factory=dict)  # the emit lines' fields
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    republished: int = 0
    emitter_reconnects: int = 0

    @property
    def rows(self) -> RowSet:
        """The rows the emitter said it sent (rows=A-B in emit_done or the manifest, else
        1..total), as a range: a manifest's claim costs no memory (utils/rowset.py)."""
        m = re.fullmatch(r"(\d+)-(\d+)", self.emitted.get("rows", ""))
        if m:
            return RowSet([(int(m[1]), int(m[2]))])
        total = self.emitted.get("total")
        return RowSet([(1, int(total))]) if total and total.isdecimal() else RowSet()

    @property
    def emit_status(self) -> str:
        """done, failed, or running (no emit_done/emit_failed line yet, or it was lost)."""
        for ending, status in EMIT_ENDINGS.items():
            if ending in self.emitted:
                return status
        return EMIT_RUNNING if EMIT_STARTED in self.emitted else EMIT_UNKNOWN

    # -- what the fold tells a run: here, a record of every task --------------------------------
    def record(self, task: str, row: int | None) -> TaskRecord:
        """The task's record, made at its first line."""
        rec = self.tasks.get(task)
        if rec is None:
            rec = self.tasks[task] = TaskRecord(task, row if row is not None and row >= 0 else None)
        elif rec.row is None and row is not None and row >= 0:
            rec.row = row
        return rec

    def open_attempt(self, task: str, worker: str) -> Attempt | None:
        """The worker's latest attempt at the task that has not ended, if any."""
        rec = self.tasks.get(task)
        for a in reversed(rec.attempts if rec else ()):
            if a.worker == worker and a.end is None:
                return a
        return None

    def on_started(self, a: Attempt, dots: int | None) -> None:
        """A worker began attempt `a`."""
        rec = self.record(a.task, a.row)
        rec.body = a.body
        if dots is not None:
            rec.dots = dots
        rec.attempts.append(a)

    def on_ended(self, a: Attempt, row: int | None, found: bool) -> None:
        """Attempt `a` ended (a.outcome); not `found`: its `started` line was not seen."""
        rec = self.record(a.task, row)
        if not found and a.outcome == DONE:  # its start was lost (rotated away): still count it
            rec.attempts.append(a)

    def on_abandoned(self, a: Attempt, ts: datetime) -> None:
        """Its worker moved on at ts without ending `a` (restarted, or the task went to
        another worker); the record keeps it unfinished, as the audit wants it."""

    def on_dead_lettered(self, task: str, row: int | None, ts: datetime, reason: str) -> None:
        self.record(task, row).dead_lettered = True

    def on_ack_lost(self, task: str, row: int | None) -> None:
        self.record(task, row).ack_lost += 1

    def on_retry(self, task: str, row: int | None) -> None:
        self.record(task, row)


@dataclass(slots=True)
class WorkerLife:
    """One worker as its lines tell it: when it was ready and stopped, and what it does now."""

    name: str
    ready: list[tuple[datetime, str]] = field(default_factory=list)  # (when, queue)
    stopped: list[datetime] = field(default_factory=list)
    queue: str = ""  # the queue of its latest ready (max(ready)), once it has one
    last_seen: datetime | None = None
    host: str | None = None
    node: str | None = None
    current: Attempt | None = None  # the attempt it is running
    last_row: int | None = None
    last_body: str | None = None
    gone: str | None = None  # why its lines say it is gone; None while it may be there
    reconnecting: bool = False
    stopping: str | None = None  # warm or cold, once asked to stop

    def ready_before(self, ts: datetime) -> datetime | None:
        """Its latest worker_ready at or before ts (None: it said nothing before then)."""
        return max((t for t, _q in self.ready if t <= ts), default=None)

    def stopped_after(self, ts: datetime) -> datetime | None:
        """Its first worker_stopped after ts (None: it has not stopped since, as far as
        the logs know; a worker killed with SIGKILL writes no such line)."""
        return min((t for t in self.stopped if t > ts), default=None)

    def holds_since(self, ts: datetime) -> bool:
        """It may still hold what it took at ts: no stop and no fresh start since then."""
        return self.stopped_after(ts) is None and not any(t > ts for t, _q in self.ready)

    def running_on(self, queue: str) -> bool:
        """Its last line about its life says it is consuming queue (ready, not stopped)."""
        if not self.ready:
            return False
        when, q = max(self.ready)
        return q == queue and not any(t > when for t in self.stopped)


def as_utc(ts: datetime) -> datetime:
    """A time from a line, in UTC (a hand-edited or foreign line may lack the Z; naive and
    aware times cannot be compared)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def event_time(text: str | None) -> datetime | None:
    """An event's ts as a UTC time, or None when it is not one."""
    if not text:
        return None
    try:
        ts = parse_ts(text)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


# -- a whole log set, for the report --------------------------------------------------------------
@dataclass
class Skipped:
    """A log line we could not use, and why."""

    file: str
    line: int
    why: str


@dataclass
class LogSet:
    """Every run found in a log folder, the lines that could not be used, and the rest
    the report needs: who ran when, messages from other tools, deliveries per queue."""

    runs: dict[str, Run]
    skipped: list[Skipped]
    #: The workers whose lines say when they were ready or stopped.
    workers: dict[str, WorkerLife] = field(default_factory=dict)
    #: Tasks with no run id: published by other tools (the tutorial's new_task.py, ...).
    untracked: Run = field(default_factory=lambda: Run(UNTRACKED))
    #: `started` lines per queue (the queue the worker consumed when it logged them).
    deliveries: Counter[str] = field(default_factory=Counter)
