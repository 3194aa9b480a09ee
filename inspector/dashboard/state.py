"""The dashboard's live state: events folded, one at a time, into a bounded view.

An event is the dict utils.logformat.parse_line gives for a log line (every value a string:
ts, event, worker, task, row, run, ...); the broker's event stream carries the same fields.
DashboardState.apply() folds one; snapshot() is what /api/state serves and metrics() what
/metrics serves. Nothing here reads a file or a socket, so any source can feed it
(sources.py). Memory is bounded by the caps below, whatever the length of the run.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from utils.logformat import parse_ts
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

ONLINE = ("busy", "idle")


def epoch(ts: str | None) -> float | None:
    """Seconds since the epoch of a log timestamp, or None when it is not one."""
    if not ts:
        return None
    try:
        t = parse_ts(ts)
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def iso(t: float | None) -> str | None:
    """A time as the logs write it (UTC, milliseconds), or None."""
    if t is None:
        return None
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(value: str | None) -> int | None:
    if value is None or not value.lstrip("-").isdigit():
        return None
    return int(value)


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
class Current:
    """The task a worker is running."""

    task: str
    run: str
    row: int | None
    body: str
    attempt: int
    start: float
    redelivered: bool


@dataclass(slots=True)
class WorkerView:
    """One worker, as its events tell it."""

    name: str
    first_seen: float
    last_seen: float
    host: str | None = None
    node: str | None = None
    current: Current | None = None
    last_row: int | None = None
    last_body: str | None = None
    gone: str | None = None  # why we take it for gone; None while it seems online
    reconnecting: bool = False
    stopping: str | None = None  # warm or cold, once asked to stop


@dataclass(slots=True)
class WorkerCounts:
    """What one worker did in one run."""

    done: int = 0
    failed: int = 0
    busy: float = 0.0


Bar = tuple[int, str, int | None, float, float, str]  # seq, worker, row, start, end, outcome


@dataclass
class RunView:
    """One emit run: its counts, its recent bars and failures. Bounded whatever its size."""

    run_id: str
    queue: str | None = None
    source: str | None = None
    broker: str | None = None
    emit_status: str = "unknown"  # running, done, failed; unknown until an emit line is seen
    emitted: int | None = None
    emit_started: float | None = None
    emit_ended: float | None = None
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

    def add_bar(self, bar: Bar) -> None:
        if len(self.bars) == self.bars.maxlen:
            self.dropped_seq = self.bars[0][0]
        self.bars.append(bar)

    def count_finish(self, ts: float) -> None:
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

    def rate(self, now: float) -> float | None:
        """Tasks finished per second: lately while it runs, on average once all are in."""
        if self.first_start is None:
            return None
        if self.emitted is not None and self.finished >= self.emitted and self.last_end:
            span = self.last_end - self.first_start
            return self.finished / span if span > 0 else None
        window = min(RATE_WINDOW, max(1.0, now - self.first_start))
        recent = sum(n for sec, n in self.rate_buckets if sec >= now - window)
        return recent / window

    def eta(self, now: float) -> float | None:
        """Seconds until every emitted task is finished, at the current rate."""
        if self.emitted is None:
            return None
        left = self.emitted - self.finished
        if left <= 0:
            return 0.0
        rate = self.rate(now)
        return left / rate if rate else None


class DashboardState:
    """Every event folded into runs and workers; snapshot() and metrics() read it.

    Not thread-safe: the caller holds one lock around apply() and the readers.
    """

    def __init__(self, queue: str | None = None, pinned_run: str | None = None) -> None:
        self.queue = queue
        self.pinned_run = pinned_run
        self.epoch = secrets.token_hex(4)  # a new server: the page starts its timeline afresh
        self.version = 0
        self.events = 0
        self.unusable = 0
        self.runs: dict[str, RunView] = {}
        self.workers: dict[str, WorkerView] = {}
        self._holder: dict[str, str] = {}  # task id -> the worker running it now
        self._names: dict[str, str] = {}  # one string per worker name, shared by its bars

    # -- folding ------------------------------------------------------------------------------
    def apply_all(self, events: list[dict[str, str]]) -> None:
        """Fold events in the order given."""
        for e in events:
            self.apply(e)

    def apply(self, f: dict[str, str]) -> None:
        """Fold one event; one we cannot use is counted, never fatal."""
        ts = epoch(f.get("ts"))
        ev = f.get("event")
        if ts is None or not ev:
            self.unusable += 1
            return
        self.version += 1
        self.events += 1
        name = f.get("worker")
        w = self._worker(name, ts, f) if name else None
        run_id = f.get("run")
        run = self._run(run_id) if run_id else None
        handler = _HANDLERS.get(ev)
        if handler is not None:
            handler(self, f, ts, w, run)

    def _worker(self, name: str, ts: float, f: dict[str, str]) -> WorkerView:
        w = self.workers.get(name)
        if w is None:
            if len(self.workers) >= MAX_WORKERS:
                oldest = min(self.workers.values(), key=lambda x: x.last_seen)
                self._forget_worker(oldest.name)
            name = self._names.setdefault(name, name)
            w = self.workers[name] = WorkerView(name, ts, ts)
        w.last_seen = max(w.last_seen, ts)
        if f.get("host"):
            w.host = f["host"]
        if w.gone and f.get("event") != "worker_stopped":
            w.gone = None  # it speaks, so it is there
        return w

    def _forget_worker(self, name: str) -> None:
        w = self.workers.pop(name)
        self._names.pop(name, None)
        if w.current is not None:
            self._holder.pop(w.current.task, None)

    def _run(self, run_id: str) -> RunView | None:
        run = self.runs.get(run_id)
        if run is not None:
            return run
        if len(self.runs) >= MAX_RUNS:
            evictable = sorted(r for r in self.runs if r != self.pinned_run)
            if not evictable or (run_id < evictable[0] and run_id != self.pinned_run):
                return None  # older than every run we keep: its tasks are not shown
            del self.runs[evictable[0]]
        run = self.runs[run_id] = RunView(run_id)
        return run

    def _close(
        self,
        w: WorkerView,
        task: str,
        ts: float,
        outcome: str,
        f: dict[str, str] | None = None,
        run: RunView | None = None,
    ) -> None:
        """End the worker's attempt at task: a bar on the timeline and its busy time."""
        cur = w.current
        if cur is not None and cur.task == task:
            w.current = None
            self._holder.pop(task, None)
            start, row = cur.start, cur.row
            run = self.runs.get(cur.run)
        else:
            # Its `started` line is not here (rotated away, or before what we read).
            secs = (f or {}).get("seconds")
            start = ts - (float(secs) if secs and _is_number(secs) else 0.0)
            row = _int((f or {}).get("row"))
        if run is None:
            return
        run.counts(w.name).busy += max(0.0, ts - start)
        run.add_bar((self.version, w.name, row, start, ts, outcome))
        run.last_end = ts if run.last_end is None else max(run.last_end, ts)

    # -- the handlers, one per event ----------------------------------------------------------
    def _on_ready(self, f: dict[str, str], ts: float, w: WorkerView | None, run: Any) -> None:
        if w is None:
            return
        w.gone, w.reconnecting, w.stopping = None, False, None
        w.node = f.get("node") or w.node
        if w.current is not None:  # a new process under an old name: the old task is gone
            self._holder.pop(w.current.task, None)
            w.current = None

    def _on_stopped(self, f: dict[str, str], ts: float, w: WorkerView | None, run: Any) -> None:
        if w is None:
            return
        w.gone = f"stopped: {f.get('stop') or 'exited'}"
        if w.current is not None:
            self._holder.pop(w.current.task, None)
            w.current = None

    def _on_stopping(self, f: dict[str, str], ts: float, w: WorkerView | None, run: Any) -> None:
        if w is not None:
            w.stopping = "warm" if f["event"] == "shutdown_warm" else "cold"

    def _on_lost(self, f: dict[str, str], ts: float, w: WorkerView | None, run: Any) -> None:
        if w is not None:
            w.reconnecting = f["event"] != "reconnected"

    def _on_started(
        self, f: dict[str, str], ts: float, w: WorkerView | None, run: RunView | None
    ) -> None:
        task = f.get("task")
        if w is None or not task:
            return
        holder = self._holder.get(task)
        if holder is not None and holder != w.name and holder in self.workers:
            # The broker gave this task to another worker while `holder` ran it: holder's
            # connection is gone (killed, most likely) unless it speaks again.
            other = self.workers[holder]
            self._close(other, task, ts, "lost")
            other.gone = f"its task went to {w.name} (killed, or its connection was lost)"
        if w.current is not None:
            self._close(w, w.current.task, ts, "lost")
        row = _int(f.get("row"))
        body = f.get("body", "")
        w.last_row, w.last_body = row, body
        if run is None:
            return
        w.current = Current(
            task,
            run.run_id,
            row,
            body,
            _int(f.get("attempt")) or 1,
            ts,
            f.get("redelivered") == "true",
        )
        self._holder[task] = w.name
        run.started += 1
        if w.current.redelivered:
            run.redelivered += 1
        run.first_start = ts if run.first_start is None else min(run.first_start, ts)
        run.counts(w.name)

    def _on_done(
        self, f: dict[str, str], ts: float, w: WorkerView | None, run: RunView | None
    ) -> None:
        task = f.get("task")
        if w is None or run is None or not task:
            return
        self._close(w, task, ts, "done", f, run)
        run.counts(w.name).done += 1
        row = _int(f.get("row"))
        if run.done_set.add(task, row):
            run.done += 1
        else:
            run.duplicates += 1
        if run.finished_set.add(task, row):
            run.finished += 1
            run.count_finish(ts)
        if run.first_start is None:
            run.first_start = ts - (float(f["seconds"]) if _is_number(f.get("seconds")) else 0)

    def _on_failed(
        self, f: dict[str, str], ts: float, w: WorkerView | None, run: RunView | None
    ) -> None:
        task = f.get("task")
        if w is None or run is None or not task:
            return
        body = w.current.body if w.current is not None and w.current.task == task else None
        self._close(w, task, ts, "failed", f, run)
        run.failed += 1
        run.counts(w.name).failed += 1
        run.failures.append(
            {
                "at": ts,
                "worker": w.name,
                "task": task,
                "row": _int(f.get("row")),
                "attempt": _int(f.get("attempt")),
                "of": _int(f.get("of")),
                "reason": f.get("reason", ""),
                "body": body,
                "dead_lettered": False,
            }
        )

    def _on_requeued(
        self, f: dict[str, str], ts: float, w: WorkerView | None, run: RunView | None
    ) -> None:
        task = f.get("task")
        if w is None or run is None or not task:
            return
        self._close(w, task, ts, "requeued", f, run)
        run.requeued += 1

    def _on_dead(
        self, f: dict[str, str], ts: float, w: WorkerView | None, run: RunView | None
    ) -> None:
        task = f.get("task")
        if run is None or not task:
            return
        row = _int(f.get("row"))
        if run.dead_set.add(task, row):
            run.dead_lettered += 1
        if run.finished_set.add(task, row):
            run.finished += 1
            run.count_finish(ts)
        for failure in reversed(run.failures):
            if failure["task"] == task:
                failure["dead_lettered"] = True
                failure["dead_reason"] = f.get("reason", "")
                return

    def _on_ack_lost(self, f: dict[str, str], ts: float, w: Any, run: RunView | None) -> None:
        if run is not None:
            run.ack_lost += 1

    def _on_emit(
        self, f: dict[str, str], ts: float, w: WorkerView | None, run: RunView | None
    ) -> None:
        if run is None:
            return
        ev = f["event"]
        run.queue = f.get("queue") or run.queue
        run.source = f.get("source") or run.source
        if f.get("url"):
            run.broker = mask_url(f["url"])
        total = _int(f.get("total"))
        if total is not None:
            run.emitted = total
        if ev == "emit_started":
            run.emit_started = ts
            if run.emit_status == "unknown":
                run.emit_status = "running"
        else:
            run.emit_ended = ts
            run.emit_status = "done" if ev == "emit_done" else "failed"

    # -- reading ------------------------------------------------------------------------------
    def shown_run(self) -> RunView | None:
        """The run --run pins, else the newest emitted on our queue (run ids sort by time)."""
        if self.pinned_run:
            return self.runs.get(self.pinned_run)
        emitted = [r for r in self.runs.values() if r.emit_status != "unknown"]
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
                    if out[n][0] == "idle" and now - self.workers[n].last_seen > GONE_AFTER
                ),
                key=lambda w: w.last_seen,
            )
            for w in silent[: max(0, excess)]:
                out[w.name] = (
                    "gone",
                    f"silent for {now - w.last_seen:.0f} s, and the queue has "
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
        """The state as JSON-ready data (docs/DASHBOARD.md).

        The timeline holds only the bars newer than `since`, when the page asking has the
        rest: it saw version `since` of this server (`epoch_seen`) and of this run
        (`run_seen`). Otherwise it holds every bar kept.
        """
        run = self.shown_run()
        consumers = queue.get("consumers") if queue else None
        status = self.worker_status(now, consumers if isinstance(consumers, int) else None)
        workers = [
            self._worker_json(w, status[w.name], run, now)
            for w in sorted(self.workers.values(), key=lambda w: w.name)
            if self._shown(w, status[w.name][0], run)
        ]
        return {
            "schema": 1,
            "epoch": self.epoch,
            "version": self.version,
            "now": iso(now),
            "source": {**(source or {}), "events": self.events, "unusable": self.unusable},
            "run": self._run_json(run, now) if run else None,
            "pinned_run": self.pinned_run,
            "runs": sorted(self.runs, reverse=True),
            "workers": workers,
            "workers_online": sum(1 for s, _ in status.values() if s in ONLINE),
            "workers_hidden": len(self.workers) - len(workers),
            "queue": queue,
            "failures": [_failure_json(x) for x in reversed(run.failures)] if run else [],
            "timeline": self._timeline_json(run, since, epoch_seen, run_seen),
        }

    def _shown(self, w: WorkerView, status: str, run: RunView | None) -> bool:
        """Online workers, and the gone ones that worked on the shown run."""
        if status != "gone":
            return True
        return run is not None and w.name in run.workers

    def _worker_json(
        self, w: WorkerView, status: tuple[str, str], run: RunView | None, now: float
    ) -> dict[str, Any]:
        counts = run.workers.get(w.name) if run else None
        cur = w.current
        task = None
        if cur is not None:
            task = {
                "task": cur.task,
                "run": cur.run,
                "row": cur.row,
                "body": cur.body,
                "attempt": cur.attempt,
                "redelivered": cur.redelivered,
                "started_at": iso(cur.start),
                "seconds": round(max(0.0, now - cur.start), 3),
            }
        return {
            "name": w.name,
            "status": status[0],
            "note": status[1],
            "host": w.host,
            "node": w.node,
            "task": task,
            "last_task": None if w.last_body is None else {"row": w.last_row, "body": w.last_body},
            "done": counts.done if counts else 0,
            "failed": counts.failed if counts else 0,
            "busy_seconds": round(counts.busy, 3) if counts else 0.0,
            "last_seen": iso(w.last_seen),
            "seconds_since_seen": round(max(0.0, now - w.last_seen), 3),
        }

    def _run_json(self, run: RunView, now: float) -> dict[str, Any]:
        rate = run.rate(now)
        eta = run.eta(now)
        progress = None
        if run.emitted:
            progress = round(min(1.0, run.finished / run.emitted), 4)
        return {
            "id": run.run_id,
            "queue": run.queue,
            "source": run.source,
            "broker": run.broker,
            "emit_status": run.emit_status,
            "emitted": run.emitted,
            "started": run.started,
            "done": run.done,
            "failed": run.failed,
            "dead_lettered": run.dead_lettered,
            "requeued": run.requeued,
            "redelivered": run.redelivered,
            "duplicates": run.duplicates,
            "ack_lost": run.ack_lost,
            "finished": run.finished,
            "progress": progress,
            "rate": None if rate is None else round(rate, 3),
            "eta_seconds": None if eta is None or math.isinf(eta) else round(eta, 1),
            "emit_started_at": iso(run.emit_started),
            "first_start_at": iso(run.first_start),
            "last_end_at": iso(run.last_end),
        }

    def _timeline_json(
        self, run: RunView | None, since: int, epoch_seen: str | None, run_seen: str | None
    ) -> dict[str, Any]:
        if run is None or run.origin is None:
            return {"run": None, "origin": None, "full": True, "bars": [], "kept": TIMELINE_BARS}
        # The page's copy is whole unless it comes from another server or run, or it missed
        # bars that were dropped meanwhile: then it gets every bar kept.
        full = (
            since <= 0
            or epoch_seen != self.epoch
            or (run_seen is not None and run_seen != run.run_id)
            or since < run.dropped_seq
        )
        origin = run.origin
        bars = []
        for seq, worker, row, start, end, outcome in reversed(run.bars):
            if not full and seq <= since:
                break
            bars.append(
                [
                    seq,
                    worker,
                    row,
                    round((start - origin) * 1000),
                    round((end - origin) * 1000),
                    outcome,
                ]
            )
        bars.reverse()
        return {
            "run": run.run_id,
            "origin": iso(origin),
            "full": full,
            "bars": bars,
            "kept": TIMELINE_BARS,
            "dropped": run.dropped_seq > 0,
        }

    def metrics(self, queue: dict[str, Any] | None, now: float) -> str:
        """The Prometheus text exposition (format 0.0.4) of the shown run and the queue."""
        run = self.shown_run()
        status = self.worker_status(now, _as_int(queue.get("consumers")) if queue else None)
        out: list[str] = []

        def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {_number(v)}" for labels, v in samples)

        rl = f'run="{_label(run.run_id)}"' if run else ""
        per_worker = sorted(run.workers.items()) if run else []
        family(
            "workqueue_tasks_done_total",
            "counter",
            "Tasks done in the shown run, by the worker that did them (a task done twice counts twice).",
            [(f'{{{rl},worker="{_label(n)}"}}', c.done) for n, c in per_worker],
        )
        family(
            "workqueue_tasks_failed_total",
            "counter",
            "Failed attempts in the shown run, by worker (a retried task may fail more than once).",
            [(f'{{{rl},worker="{_label(n)}"}}', c.failed) for n, c in per_worker],
        )
        family(
            "workqueue_tasks_dead_lettered_total",
            "counter",
            "Tasks of the shown run moved to the dead-letter queue.",
            [(f"{{{rl}}}", run.dead_lettered)] if run else [],
        )
        family(
            "workqueue_tasks_emitted",
            "gauge",
            "Tasks the shown run's emit says it holds (unknown until the emit says).",
            [(f"{{{rl}}}", run.emitted)] if run and run.emitted is not None else [],
        )
        q = queue or {}
        ql = f'{{queue="{_label(str(q.get("name", self.queue or "")))}"}}'
        for key, name, text in (
            ("ready", "workqueue_queue_ready", "Messages ready in the work queue."),
            ("unacked", "workqueue_queue_unacked", "Messages delivered and not yet acked."),
            ("consumers", "workqueue_queue_consumers", "Consumers on the work queue."),
            ("dead", "workqueue_queue_dead_letters", "Messages in the dead-letter queue."),
        ):
            value = _as_int(q.get(key))
            family(name, "gauge", text, [(ql, value)] if value is not None else [])
        family(
            "workqueue_workers_online",
            "gauge",
            "Workers busy or idle (not gone, not reconnecting).",
            [("", sum(1 for s, _ in status.values() if s in ONLINE))],
        )
        family(
            "workqueue_dashboard_events_total",
            "counter",
            "Events the dashboard has folded since it started.",
            [("", self.events)],
        )
        return "\n".join(out) + "\n"


def _failure_json(x: dict[str, Any]) -> dict[str, Any]:
    return {**x, "at": iso(x["at"])}


def _is_number(v: str | None) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except ValueError:
        return False


def _as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_HANDLERS = {
    "worker_ready": DashboardState._on_ready,
    "worker_stopped": DashboardState._on_stopped,
    "shutdown_warm": DashboardState._on_stopping,
    "shutdown_cold": DashboardState._on_stopping,
    "connection_lost": DashboardState._on_lost,
    "reconnect_failed": DashboardState._on_lost,
    "reconnected": DashboardState._on_lost,
    "started": DashboardState._on_started,
    "done": DashboardState._on_done,
    "failed": DashboardState._on_failed,
    "requeued": DashboardState._on_requeued,
    "dead_lettered": DashboardState._on_dead,
    "ack_lost": DashboardState._on_ack_lost,
    "emit_started": DashboardState._on_emit,
    "emit_done": DashboardState._on_emit,
    "emit_failed": DashboardState._on_emit,
}
