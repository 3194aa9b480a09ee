"""The dashboard's live state: events folded, one at a time, into a bounded view.

An event is the dict utils/eventlog/format.py's parse_line gives for a log line (every
value a string); the broker's event stream carries the same fields. DashboardState.apply()
hands each to the one fold (utils/eventlog/fold.py, the report's too), which keeps the
workers' lives and tells each run's RunView what happened; snapshot() is what /api/state
serves and metrics() what /metrics serves. Nothing here reads a file or a socket, so any
source can feed it (sources.py). Memory is bounded by the caps below, whatever the length
of the run.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inspector.dashboard import api
from inspector.dashboard.api import ONLINE, seen
from utils.eventlog.fold import MAX_ROW, Fold
from utils.eventlog.format import read_int
from utils.eventlog.records import EMIT_UNKNOWN, Attempt, Run, WorkerLife, event_time
from utils.eventlog.schema import DONE, EMIT_STARTED, FAILED
from utils.settings import mask_url
from utils.text import plural

#: Runs kept at once (the newest by id, and the one --run pins); older ones are forgotten.
MAX_RUNS = 8
#: Finished task bars kept per run for the timeline; older bars are dropped, oldest first.
TIMELINE_BARS = 5000
#: Recent failures kept per run.
FAILURES_KEPT = 50
#: Workers kept; past this, the one heard from least recently is forgotten.
MAX_WORKERS = 500
#: Rows up to this are counted in a bitmap (one bit each); a task with another kind of id
#: goes in a set of at most IDS_KEPT ids, past which a repeat of it is counted again.
ROW_BITMAP_MAX = 10_000_000
IDS_KEPT = 100_000
#: The rate is taken over this many seconds of finished tasks.
RATE_WINDOW = 30.0
#: An idle worker silent this long is taken for gone when the queue has fewer consumers
#: than we think are online.
GONE_AFTER = 30.0

#: The bar of an attempt its worker left behind (the task went to another, or it restarted).
LOST = "lost"


def epoch(ts: str | None) -> float | None:
    """Seconds since the epoch of a log timestamp, or None when it is not one."""
    t = event_time(ts)
    return None if t is None else t.timestamp()


class TaskSet:
    """The tasks of one run counted so far: a bit per row for our own ids, else a capped set."""

    __slots__ = ("bits", "ids", "prefix")

    def __init__(self, run_id: str) -> None:
        self.prefix = run_id + "-"
        self.bits = bytearray()
        self.ids: set[str] = set()

    def add(self, task: str, row: int | None) -> bool:
        """Count a task; False when it was counted before."""
        if row is not None and 0 <= row < ROW_BITMAP_MAX and task == f"{self.prefix}{row}":
            i, bit = divmod(row, 8)
            if i >= len(self.bits):
                self.bits.extend(bytes(i + 1 - len(self.bits)))
            if self.bits[i] >> bit & 1:
                return False
            self.bits[i] |= 1 << bit
            return True
        if task in self.ids:
            return False
        if len(self.ids) < IDS_KEPT:
            self.ids.add(task)
        return True


@dataclass(slots=True)
class WorkerCounts:
    """What one worker did in one run."""

    done: int = 0
    failed: int = 0
    busy: float = 0.0


Bar = tuple[int, str, int | None, float, float, str]  # seq, worker, row, start, end, outcome


@dataclass(eq=False)
class RunView(Run):
    """One emit run as the dashboard shows it: counts, recent bars and failures.

    The fold (utils/eventlog/fold.py) tells it what happened through the `on_*` methods;
    unlike the report's Run it keeps no record per task, so it stays bounded whatever the
    length of the run.
    """

    owner: DashboardState | None = None  # whose version numbers the bars
    started: int = 0
    done: int = 0
    duplicates: int = 0
    failed: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    redelivered: int = 0
    ack_lost: int = 0
    finished: int = 0  # tasks done or dead-lettered, each counted once
    first_start: float | None = None
    last_end: float | None = None
    workers: dict[str, WorkerCounts] = field(default_factory=dict)
    bars: deque[Bar] = field(default_factory=lambda: deque(maxlen=TIMELINE_BARS))
    dropped_seq: int = 0  # the newest seq of a bar dropped for room
    failures: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    rate_buckets: deque[list[int]] = field(default_factory=deque)  # [second, finished]

    def __post_init__(self) -> None:
        self.done_set = TaskSet(self.run_id)
        self.dead_set = TaskSet(self.run_id)
        self.finished_set = TaskSet(self.run_id)

    # -- what its emit lines say ----------------------------------------------------------------
    @property
    def queue(self) -> str | None:
        return self.emitted.get("queue") or None

    @property
    def source(self) -> str | None:
        return self.emitted.get("source") or None

    @property
    def broker(self) -> str | None:
        url = self.emitted.get("url")
        return mask_url(url) if url else None

    @property
    def total(self) -> int | None:
        """The tasks its emit says it holds (None until an emit line says)."""
        return read_int(self.emitted.get("total"), MAX_ROW)

    @property
    def emit_started(self) -> float | None:
        return epoch(self.emitted.get(EMIT_STARTED))

    @property
    def origin(self) -> float | None:
        """Where the run's timeline starts: the emit, or its first task if that came first."""
        times = [t for t in (self.emit_started, self.first_start) if t is not None]
        return min(times) if times else None

    def counts(self, worker: str) -> WorkerCounts:
        c = self.workers.get(worker)
        if c is None:
            c = self.workers[worker] = WorkerCounts()
        return c

    # -- what the fold tells it -----------------------------------------------------------------
    def open_attempt(self, task: str, worker: str) -> Attempt | None:
        return None  # only the worker's current attempt is kept, by the fold

    def on_started(self, a: Attempt, dots: int | None) -> None:
        self.started += 1
        if a.redelivered:
            self.redelivered += 1
        t = a.start.timestamp()
        self.first_start = t if self.first_start is None else min(self.first_start, t)
        self.counts(a.worker)

    def on_ended(self, a: Attempt, row: int | None, found: bool) -> None:
        start, stop = a.start.timestamp(), (a.end or a.start).timestamp()
        counts = self._bar(a, start, stop, a.outcome)
        if a.outcome == DONE:
            counts.done += 1
            if self.done_set.add(a.task, row):
                self.done += 1
            else:
                self.duplicates += 1
            self._finish(a.task, row, stop)
            if self.first_start is None:
                self.first_start = start
        elif a.outcome == FAILED:
            self.failed += 1
            counts.failed += 1
            self.failures.append(
                {
                    "at": stop,
                    "worker": a.worker,
                    "task": a.task,
                    "row": row,
                    "attempt": a.said,
                    "of": a.of,
                    "reason": a.reason,
                    "body": a.body if found else None,
                    "dead_lettered": False,
                }
            )
        else:
            self.requeued += 1

    def on_abandoned(self, a: Attempt, ts: datetime) -> None:
        self._bar(a, a.start.timestamp(), ts.timestamp(), LOST)

    def on_dead_lettered(self, task: str, row: int | None, ts: datetime, reason: str) -> None:
        if self.dead_set.add(task, row):
            self.dead_lettered += 1
        self._finish(task, row, ts.timestamp())
        for failure in reversed(self.failures):
            if failure["task"] == task:
                failure.update(dead_lettered=True, dead_reason=reason)
                return

    def on_ack_lost(self, task: str, row: int | None) -> None:
        self.ack_lost += 1

    def on_retry(self, task: str, row: int | None) -> None:
        """Nothing to show: the failure is shown, and the next attempt will be."""

    def _bar(self, a: Attempt, start: float, stop: float, outcome: str) -> WorkerCounts:
        """The attempt's bar on the timeline, and its worker's busy time; its counts."""
        counts = self.counts(a.worker)
        counts.busy += max(0.0, stop - start)
        if len(self.bars) == self.bars.maxlen:
            self.dropped_seq = self.bars[0][0]
        seq = self.owner.version if self.owner is not None else 0
        self.bars.append((seq, a.worker, a.row, start, stop, outcome))
        self.last_end = stop if self.last_end is None else max(self.last_end, stop)
        return counts

    def _finish(self, task: str, row: int | None, ts: float) -> None:
        """Count a task done or dead-lettered once, and in the rate."""
        if not self.finished_set.add(task, row):
            return
        self.finished += 1
        sec = int(ts)
        for bucket in reversed(self.rate_buckets):
            if bucket[0] == sec:
                bucket[1] += 1
                return
            if bucket[0] < sec:
                break
        self.rate_buckets.append([sec, 1])
        if len(self.rate_buckets) > 1 and self.rate_buckets[-2][0] > sec:
            self.rate_buckets = deque(sorted(self.rate_buckets))  # a line from another file
        while self.rate_buckets and self.rate_buckets[0][0] < sec - 2 * RATE_WINDOW:
            self.rate_buckets.popleft()

    # -- its pace -------------------------------------------------------------------------------
    def rate(self, now: float) -> float | None:
        """Tasks finished per second: lately while it runs, on average once all are in."""
        if self.first_start is None:
            return None
        if self.total is not None and self.finished >= self.total and self.last_end:
            span = self.last_end - self.first_start
            return self.finished / span if span > 0 else None
        window = min(RATE_WINDOW, max(1.0, now - self.first_start))
        recent = sum(n for sec, n in self.rate_buckets if sec >= now - window)
        return recent / window

    def eta(self, now: float) -> float | None:
        """Seconds until every emitted task is finished, at the current rate."""
        total = self.total
        if total is None:
            return None
        left = total - self.finished
        if left <= 0:
            return 0.0
        rate = self.rate(now)
        return left / rate if rate else None


class DashboardState:
    """Every event folded (utils/eventlog/fold.py) into runs and workers; snapshot() and
    metrics() read it.

    Not thread-safe: the caller holds one lock around apply() and the readers.
    """

    def __init__(self, queue: str | None = None, pinned_run: str | None = None) -> None:
        self.queue = queue
        self.pinned_run = pinned_run
        self.epoch = secrets.token_hex(4)  # a new server: the page starts its timeline afresh
        self.version = 0
        self.events = 0
        self.unusable = 0
        self.fold: Fold[RunView] = Fold(
            self._new_run, max_runs=MAX_RUNS, keep_run=pinned_run, max_workers=MAX_WORKERS
        )

    def _new_run(self, run_id: str) -> RunView:
        return RunView(run_id, owner=self)

    @property
    def runs(self) -> dict[str, RunView]:
        return self.fold.runs

    @property
    def workers(self) -> dict[str, WorkerLife]:
        return self.fold.workers

    # -- folding ------------------------------------------------------------------------------
    def apply_all(self, events: list[dict[str, str]]) -> None:
        """Fold events in the order given."""
        for e in events:
            self.apply(e)

    def apply(self, f: dict[str, str]) -> None:
        """Fold one event; one we cannot use is counted, never fatal."""
        ts = event_time(f.get("ts"))
        if ts is None or not f.get("event"):
            self.unusable += 1
            return
        self.version += 1
        self.events += 1
        self.fold.apply(ts, f)

    # -- reading ------------------------------------------------------------------------------
    def shown_run(self) -> RunView | None:
        """The run --run pins, else the newest emitted on our queue (run ids sort by time)."""
        if self.pinned_run:
            return self.runs.get(self.pinned_run)
        emitted = [r for r in self.runs.values() if r.emit_status != EMIT_UNKNOWN]
        ours = [r for r in emitted if self.queue is None or r.queue in (None, self.queue)]
        pool = ours or emitted or list(self.runs.values())
        return max(pool, key=lambda r: r.run_id) if pool else None

    def worker_status(self, now: float, consumers: int | None) -> dict[str, tuple[str, str]]:
        """Each worker's status (busy, idle, reconnecting, gone) and a note saying why."""
        out: dict[str, tuple[str, str]] = {}
        for w in self.workers.values():
            if w.gone:
                out[w.name] = ("gone", w.gone)
            elif w.reconnecting:
                out[w.name] = ("reconnecting", "lost its connection; reconnecting")
            elif w.current is not None:
                note = f"{w.stopping} stop asked; finishing" if w.stopping else ""
                out[w.name] = ("busy", note)
            else:
                out[w.name] = ("idle", f"{w.stopping} stop asked" if w.stopping else "")
        if consumers is not None:
            # Killed workers write no last line. When the broker counts fewer consumers than
            # we think are online, the idle ones silent longest are the missing ones.
            online = [n for n, (s, _) in out.items() if s in ONLINE]
            excess = len(online) - consumers
            silent = sorted(
                (
                    self.workers[n]
                    for n in online
                    if out[n][0] == "idle" and now - seen(self.workers[n]) > GONE_AFTER
                ),
                key=seen,
            )
            for w in silent[: max(0, excess)]:
                out[w.name] = (
                    "gone",
                    f"silent for {now - seen(w):.0f} s, and the queue has "
                    f"{plural(consumers, 'consumer')} for {plural(len(online), 'worker')} "
                    "that seemed online",
                )
        return out

    def snapshot(
        self,
        now: float,
        since: int = 0,
        epoch_seen: str | None = None,
        queue: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        run_seen: str | None = None,
    ) -> dict[str, Any]:
        """The state as JSON-ready data (docs/DASHBOARD.md; its pieces are in api.py).

        The timeline holds only the bars newer than `since`, when the page asking has the
        rest: it saw version `since` of this server (`epoch_seen`) and of this run
        (`run_seen`). Otherwise it holds every bar kept.
        """
        run = self.shown_run()
        consumers = queue.get("consumers") if queue else None
        status = self.worker_status(now, consumers if isinstance(consumers, int) else None)
        workers = [
            api.worker_json(w, status[w.name], run, now)
            for w in sorted(self.workers.values(), key=lambda w: w.name)
            if api.shown(w, status[w.name][0], run)
        ]
        return {
            "schema": 1,
            "epoch": self.epoch,
            "version": self.version,
            "now": api.iso(now),
            "source": {**(source or {}), "events": self.events, "unusable": self.unusable},
            "run": api.run_json(run, now) if run else None,
            "pinned_run": self.pinned_run,
            "runs": sorted(self.runs, reverse=True),
            "workers": workers,
            "workers_online": sum(1 for s, _ in status.values() if s in ONLINE),
            "workers_hidden": len(self.workers) - len(workers),
            "queue": queue,
            "failures": [api.failure_json(x) for x in reversed(run.failures)] if run else [],
            "timeline": api.timeline_json(
                self.epoch, run, since, epoch_seen, run_seen, TIMELINE_BARS
            ),
        }

    def metrics(self, queue: dict[str, Any] | None, now: float) -> str:
        """The Prometheus text exposition (format 0.0.4) of the shown run and the queue."""
        return api.metrics(self, queue, now)
