"""The one fold from events to what happened: runs, their tasks and attempts, worker lives.

An event is the dict format.parse_line makes of a line (every value a string), from a log
file or from the event stream. Fold.apply() takes one at a time: `tasks report` feeds it
a whole log set in time order (fold_events), `tasks dashboard` feeds it live. This is the
one place that reads an event's fields and decides what they mean: which attempt a `done`
ends, what a worker is doing, when it is gone. So the report and the dashboard cannot read
one line two ways.

What a run keeps of its tasks is up to the run: the fold tells it each step through the
`on_*` methods (records.py). Run keeps every task's record with every attempt, as the report's
audit needs; the dashboard's RunView (inspector/dashboard/state.py) keeps bounded counts
and recent bars instead, whatever the length of the run. Everything is a pure function of
the events given; an event that cannot be used is said why, never fatal.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

from utils.eventlog.format import parse_ts, read_int
from utils.eventlog.jobs import job_record
from utils.eventlog.records import (
    EMIT_ENDINGS,
    UNFINISHED,
    UNTRACKED,
    Attempt,
    LogSet,
    Run,
    Skipped,
    WorkerLife,
    as_utc,
)
from utils.eventlog.schema import (
    ACK_LOST,
    CONNECTION_LOST,
    DEAD_LETTERED,
    DONE,
    EMIT_DONE,
    EMIT_FAILED,
    EMIT_STARTED,
    FAILED,
    RECONNECT_FAILED,
    RECONNECTED,
    REQUEUED,
    RETRY,
    RUN_MANIFEST,
    SHUTDOWN_COLD,
    SHUTDOWN_WARM,
    STARTED,
    WORKER_READY,
    WORKER_STOPPED,
)

#: The worker of a task line that names none (hand-edited, or foreign).
NO_WORKER = "?"


#: The longest an attempt may say it took (seconds=): a month. A line claiming more (1e308,
#: 99999999999) or less than 0 is skipped, never summed.
MAX_SECONDS = 31 * 24 * 3600
#: The highest row number a line may carry; a CSV with more rows is not a batch of ours.
MAX_ROW = 10**12
#: How far a task's event may lie before the time in its run's id (clocks of other machines
#: run a little apart), and after it (a durable queue may wait a long while).
RUN_EARLY = timedelta(days=1)
RUN_LATE = timedelta(days=400)
_RUN_TIME = re.compile(r"(\d{8}T\d{6})-")


def _int(value: str | None) -> int | None:
    return read_int(value, MAX_ROW)


def _bad_numbers(ts: datetime, f: dict[str, str]) -> str:
    """Why a task line's row, attempt or time cannot be believed, or ''."""
    for key in ("row", "attempt", "of", "dots"):
        v = f.get(key)
        if v and not (v.isdecimal() and len(v) <= 13 and int(v) <= MAX_ROW):
            return f"{f['event']} event with a bad value ({key}={v[:20]})"
    m = _RUN_TIME.match(f.get("run", ""))
    if m:
        try:
            began = datetime.strptime(m[1], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        except ValueError:
            return ""
        if not began - RUN_EARLY <= ts <= began + RUN_LATE:
            return f"{f['event']} event at {f['ts']}, too far from its run's start ({m[1]})"
    return ""


R = TypeVar("R", bound=Run)


class Fold(Generic[R]):
    """Events, one at a time, into runs (with their tasks) and worker lives.

    `new_run` makes each run (Run, or a view of one); `max_runs` and `max_workers` bound
    what is kept (the oldest run by id, other than `keep_run`, and the worker heard from
    least recently go first); None keeps everything.
    """

    def __init__(
        self,
        new_run: Callable[[str], R],
        *,
        max_runs: int | None = None,
        keep_run: str | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.runs: dict[str, R] = {}
        #: Tasks with no run id: published by other tools (the tutorial's new_task.py, ...).
        self.untracked = new_run(UNTRACKED)
        self.workers: dict[str, WorkerLife] = {}
        #: `started` lines (and unreadable messages) per queue: the one the worker consumed.
        self.deliveries: Counter[str] = Counter()
        self._new_run = new_run
        self._max_runs = max_runs
        self._keep_run = keep_run
        self._max_workers = max_workers
        self._holder: dict[str, WorkerLife] = {}  # task id -> the worker running it now

    def apply(self, ts: datetime, f: dict[str, str]) -> str:
        """Fold one event that happened at ts (UTC); returns why it is unusable, or ''."""
        ev = f["event"]
        name = f.get("worker")
        life = self._life(name, ts, ev, f.get("host")) if name else None
        handler = HANDLERS.get(ev)
        return handler(self, ts, f, life) if handler is not None else ""

    # -- who and which run ----------------------------------------------------------------------
    def _life(self, name: str, ts: datetime, ev: str, host: str | None) -> WorkerLife:
        life = self.workers.get(name)
        if life is None:
            if self._max_workers is not None and len(self.workers) >= self._max_workers:
                self._forget(min(self.workers.values(), key=lambda w: w.last_seen or ts))
            life = self.workers[name] = WorkerLife(name)
        if life.last_seen is None or ts > life.last_seen:
            life.last_seen = ts
        if host:
            life.host = host
        if life.gone and ev != WORKER_STOPPED:
            life.gone = None  # it speaks, so it is there
        return life

    def _forget(self, life: WorkerLife) -> None:
        del self.workers[life.name]
        if life.current is not None:
            self._holder.pop(life.current.task, None)

    def _run(self, run_id: str) -> R | None:
        """The run of that id, made at its first line; None when it is older than every
        run kept (with max_runs)."""
        run = self.runs.get(run_id)
        if run is not None:
            return run
        if self._max_runs is not None and len(self.runs) >= self._max_runs:
            evictable = sorted(r for r in self.runs if r != self._keep_run)
            if not evictable or (run_id < evictable[0] and run_id != self._keep_run):
                return None
            del self.runs[evictable[0]]
        run = self.runs[run_id] = self._new_run(run_id)
        return run

    def _task_run(self, f: dict[str, str]) -> R | None:
        """A task line's run: the one it names, else the untracked messages' pseudo-run."""
        run_id = f.get("run")
        if not run_id:
            return self.untracked
        run = self.runs.get(run_id)  # (the usual case, without a call)
        return run if run is not None else self._run(run_id)

    def _run_by_id(self, run_id: str) -> R | None:
        return self.runs.get(run_id) if run_id else self.untracked

    def _queue_of(self, life: WorkerLife, run: Run | None) -> str:
        # Lines are folded in time order, so the worker's latest ready is its queue now.
        if life.ready:
            return life.queue
        return run.emitted.get("queue", "") if run is not None else ""

    def _drop_current(self, life: WorkerLife) -> None:
        if life.current is not None:
            self._holder.pop(life.current.task, None)
            life.current = None

    def _abandon(self, life: WorkerLife, ts: datetime) -> None:
        a = life.current
        if a is None:
            return
        self._drop_current(life)
        run = self._run_by_id(a.run)
        if run is not None:
            run.on_abandoned(a, ts)

    # -- a worker's life ------------------------------------------------------------------------
    def _ready(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        if life is not None:
            ready = (ts, f.get("queue", ""))
            if not life.ready or ready >= max(life.ready):
                life.queue = ready[1]
            life.ready.append(ready)
            life.gone, life.reconnecting, life.stopping = None, False, None
            life.node = f.get("node") or life.node
            self._drop_current(life)  # a new process under an old name: the old task is gone
        return ""

    def _stopped(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        if life is not None:
            life.stopped.append(ts)
            life.gone = f"stopped: {f.get('stop') or 'exited'}"
            self._drop_current(life)
        return ""

    def _stopping(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        if life is not None:
            life.stopping = "warm" if f["event"] == SHUTDOWN_WARM else "cold"
        return ""

    def _connection_lost(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        if life is not None:
            life.reconnecting = True
        return ""

    def _reconnected(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        if life is not None:
            life.reconnecting = False
        run_id = f.get("run")  # the emitter's line names its run; a worker's does not
        run = self._run(run_id) if run_id else None
        if run is not None:
            run.emitter_reconnects += 1
        return ""

    # -- the emitter's run ----------------------------------------------------------------------
    def _emitted(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        run_id = f.get("run")
        run = self._run(run_id) if run_id else None
        if run is None:
            return ""
        ev = f["event"]
        run.emitted.update({k: v for k, v in f.items() if k != "ts"})
        run.emitted[ev] = f["ts"]
        if ev in EMIT_ENDINGS and f.get("republished", "0").isdecimal():
            run.republished = int(f.get("republished", "0"))
        return ""

    # -- a task's attempts ----------------------------------------------------------------------
    def _started(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        why = _unusable(ts, f)
        if why is not None:
            return why
        task = f["task"]
        run = self._task_run(f)
        life = life or self._life(NO_WORKER, ts, STARTED, None)
        self.deliveries[self._queue_of(life, run)] += 1
        holder = self._holder.get(task)
        if holder is not None and holder is not life:
            # The broker gave this task to another worker while `holder` ran it: holder's
            # connection is gone (killed, most likely) unless it speaks again.
            self._abandon(holder, ts)
            holder.gone = f"its task went to {life.name} (killed, or its connection was lost)"
        if life.current is not None:
            self._abandon(life, ts)
        row = _int(f.get("row"))
        body = f.get("body", "")
        life.last_row, life.last_body = row, body
        if run is None:
            return ""  # a run older than every one kept
        attempt = _int(f.get("attempt"))
        redelivered = f.get("redelivered") == "true"
        # Positional: a dashboard following a busy run makes one a task, and keywords cost.
        a = Attempt(
            life.name,
            ts,
            redelivered,
            1 if attempt is None else attempt,
            None,
            UNFINISHED,
            None,
            "",
            task,
            row,
            run.run_id,
            body,
        )
        life.current = a
        self._holder[task] = life
        run.on_started(a, _int(f.get("dots")))
        return ""

    def _ended(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        """done, failed, requeued: ends the worker's attempt at the task."""
        ev, task = f["event"], f.get("task")
        if not task:
            return _without_task(f)
        seconds = f.get("seconds")
        secs: float | None = None
        if seconds:
            try:
                secs = float(seconds)
            except ValueError as exc:
                return f"{ev} event with a bad value ({exc})"
            if not (math.isfinite(secs) and 0 <= secs <= MAX_SECONDS):
                return f"{ev} event with a bad value (seconds={seconds[:20]})"
        bad = _bad_numbers(ts, f)
        if bad:
            return bad
        run = self._task_run(f)
        life = life or self._life(NO_WORKER, ts, ev, None)
        reason = f.get("reason", "")
        if ev == FAILED and reason.startswith("poison"):
            self.deliveries[self._queue_of(life, run)] += 1  # it never gets a `started`
        row = _int(f.get("row"))
        a = life.current
        if a is not None and a.task == task:
            life.current = None
            self._holder.pop(task, None)
            if run is None or a.run != run.run_id:
                run = self._run_by_id(a.run)
        else:
            a = run.open_attempt(task, life.name) if run is not None else None
        found = a is not None
        if a is None:  # its `started` line is not here (rotated away, or before what we read)
            attempt = _int(f.get("attempt"))
            start = ts - timedelta(seconds=secs) if secs else ts
            a = Attempt(life.name, start, False, 1 if attempt is None else attempt)
            a.task, a.row, a.run = task, row, run.run_id if run is not None else UNTRACKED
        a.end, a.outcome, a.reason = ts, ev, reason
        if ev == FAILED:
            a.said, a.of = _int(f.get("attempt")), _int(f.get("of"))
        a.seconds = secs if secs is not None else (ts - a.start).total_seconds()
        a.job = job_record(f)
        if run is not None:
            run.on_ended(a, row, found)
        return ""

    def _task_step(self, ts: datetime, f: dict[str, str], life: WorkerLife | None) -> str:
        """dead_lettered, ack_lost, retry: a step in a task's life that ends no attempt."""
        why = _unusable(ts, f)
        if why is not None:
            return why
        task = f["task"]
        run = self._task_run(f)
        if run is None:
            return ""
        ev, row = f["event"], _int(f.get("row"))
        if ev == DEAD_LETTERED:
            run.on_dead_lettered(task, row, ts, f.get("reason", ""))
        elif ev == ACK_LOST:
            run.on_ack_lost(task, row)
        else:
            run.on_retry(task, row)
        return ""


def _unusable(ts: datetime, f: dict[str, str]) -> str | None:
    """Why a task's line is left out of the fold (what to say, '' for nothing), or None when
    it can be folded: it names no task, or a number in it cannot be believed."""
    if not f.get("task"):
        return _without_task(f)
    return _bad_numbers(ts, f) or None


def _without_task(f: dict[str, str]) -> str:
    # A task line of a run that names no task cannot be used; with neither, it is no one's.
    return f"{f['event']} event without task=" if f.get("run") else ""


#: What each event does to the fold (the events missing here change nothing in it).
HANDLERS: dict[str, Callable[[Fold[Any], datetime, dict[str, str], WorkerLife | None], str]] = {
    WORKER_READY: Fold._ready,
    WORKER_STOPPED: Fold._stopped,
    SHUTDOWN_WARM: Fold._stopping,
    SHUTDOWN_COLD: Fold._stopping,
    CONNECTION_LOST: Fold._connection_lost,
    RECONNECT_FAILED: Fold._connection_lost,
    RECONNECTED: Fold._reconnected,
    EMIT_STARTED: Fold._emitted,
    RUN_MANIFEST: Fold._emitted,
    EMIT_DONE: Fold._emitted,
    EMIT_FAILED: Fold._emitted,
    STARTED: Fold._started,
    DONE: Fold._ended,
    FAILED: Fold._ended,
    REQUEUED: Fold._ended,
    DEAD_LETTERED: Fold._task_step,
    ACK_LOST: Fold._task_step,
    RETRY: Fold._task_step,
}


def fold_events(
    events: Iterable[tuple[str, int, dict[str, str]]], skipped: list[Skipped]
) -> LogSet:
    """Fold parsed events (where each came from, its line there, its fields) into runs.

    They are put in time order; events of the same millisecond keep the order given
    (started before done). Events that cannot be used are added to `skipped`.
    """
    timed = [(as_utc(parse_ts(f["ts"])), seq, e) for seq, e in enumerate(events) for f in (e[2],)]
    timed.sort(key=lambda t: (t[0], t[1]))
    fold = Fold(Run)
    apply = fold.apply
    for ts, _seq, (name, n, f) in timed:
        why = apply(ts, f)
        if why:
            skipped.append(Skipped(name, n, why))
    lives = {n: w for n, w in fold.workers.items() if w.ready or w.stopped}
    return LogSet(fold.runs, skipped, lives, fold.untracked, fold.deliveries)
