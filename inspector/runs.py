"""Reading the logs back into runs: each run's emit lines, and every task's attempts.

Everything here is a pure function of the log lines, parsed with utils.logformat. A line
we cannot use is kept as a Skipped (file, line, why), never fatal.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from utils.logformat import parse_line, parse_ts


@dataclass
class Attempt:
    """One delivery of a task to a worker, from `started` to how it ended."""

    worker: str
    start: datetime
    redelivered: bool
    attempt: int
    end: datetime | None = None
    outcome: str = "unfinished"  # done, failed, requeued, unfinished
    seconds: float | None = None
    reason: str = ""  # of a failed or requeued attempt (requeued: "cold stop", "consumer_timeout")


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
        return [a for a in self.attempts if a.outcome == "done"]

    @property
    def redelivered(self) -> bool:
        """Delivered more than once, or flagged as a redelivery by the broker."""
        return len(self.attempts) > 1 or any(a.redelivered for a in self.attempts)


@dataclass
class Run:
    """One emit run and everything the workers logged about its tasks."""

    run_id: str
    emitted: dict[str, str] = field(default_factory=dict)  # the emit_started/done fields
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    republished: int = 0
    emitter_reconnects: int = 0

    @property
    def rows(self) -> list[int]:
        """The rows the emitter said it sent (rows=A-B in emit_done or the manifest, else 1..total)."""
        m = re.fullmatch(r"(\d+)-(\d+)", self.emitted.get("rows", ""))
        if m:
            return list(range(int(m[1]), int(m[2]) + 1))
        total = self.emitted.get("total")
        return list(range(1, int(total) + 1)) if total and total.isdigit() else []

    @property
    def emit_status(self) -> str:
        """done, failed, or running (no emit_done/emit_failed line yet, or it was lost)."""
        if "emit_done" in self.emitted:
            return "done"
        if "emit_failed" in self.emitted:
            return "failed"
        return "running" if "emit_started" in self.emitted else "unknown"


@dataclass
class Skipped:
    """A log line we could not use, and why."""

    file: str
    line: int
    why: str


@dataclass
class WorkerLife:
    """When one worker said it was ready and when it stopped, and on which queue."""

    name: str
    ready: list[tuple[datetime, str]] = field(default_factory=list)  # (when, queue)
    stopped: list[datetime] = field(default_factory=list)

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


#: The pseudo-run that holds tasks published by other tools (no run id in their messages).
UNTRACKED = ""


@dataclass
class LogSet:
    """Every run found in a log folder, the lines that could not be used, and the rest
    the report needs: who ran when, messages from other tools, deliveries per queue."""

    runs: dict[str, Run]
    skipped: list[Skipped]
    workers: dict[str, WorkerLife] = field(default_factory=dict)
    #: Tasks with no run id: published by other tools (the tutorial's new_task.py, ...).
    untracked: Run = field(default_factory=lambda: Run(UNTRACKED))
    #: `started` lines per queue (the queue the worker consumed when it logged them).
    deliveries: Counter[str] = field(default_factory=Counter)


TASK_EVENTS = {"started", "done", "failed", "requeued", "dead_lettered", "ack_lost", "retry"}
#: run_manifest: the rows a run contains, logged by emit before it sends them (or, reading
#: stdin, once it knows them).
EMIT_EVENTS = {"emit_started", "run_manifest", "emit_done", "emit_failed"}
LIFE_EVENTS = {"worker_ready", "worker_stopped"}


def log_files(log_dir: Path) -> list[Path]:
    """Every log file we wrote, rotated ones (x.log.1 ...) oldest first."""
    files = [
        p for p in log_dir.glob("*.log*") if re.search(r"\.log(\.\d+)?$", p.name) and p.is_file()
    ]

    def order(p: Path) -> tuple[str, int]:
        m = re.search(r"\.log(?:\.(\d+))?$", p.name)
        n = int(m[1]) if m and m[1] else 0
        return (p.name[: m.start()] if m else p.name, -n)

    return sorted(files, key=order)


def _utc(ts: datetime) -> datetime:
    # A hand-edited or foreign line may lack the Z; naive and aware times cannot be compared.
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _why_unreadable(raw: str, last: bool, ends_with_newline: bool) -> str:
    if last and not ends_with_newline:
        return "truncated last line (the writer was cut off mid-line)"
    if "\ufffd" in raw:
        return "not valid UTF-8 (garbled bytes)"
    if not raw.lstrip().startswith("ts="):
        return "not a log line in our format (no ts= at the start)"
    return "not a log line in our format (bad timestamp, quoting or missing event=)"


def read_logs(log_dir: Path) -> LogSet:
    """Parse every log file in log_dir; lines we cannot read are listed, never fatal."""
    skipped: list[Skipped] = []
    events: list[tuple[str, int, dict[str, str]]] = []
    for path in log_files(log_dir):
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(path.name, 0, f"unreadable file: {exc.strerror}"))
            continue
        text = data.decode("utf-8", "replace")
        lines = text.splitlines()
        for n, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            fields = parse_line(raw.replace("\x00", ""))
            if fields is None:
                why = _why_unreadable(raw, n == len(lines), text.endswith("\n"))
                skipped.append(Skipped(path.name, n, why))
                continue
            events.append((path.name, n, fields))
    return fold_events(events, skipped)


def fold_events(
    events: Iterable[tuple[str, int, dict[str, str]]], skipped: list[Skipped]
) -> LogSet:
    """Fold parsed events (where each came from, its line there, its fields) into runs.

    They are put in time order; events of the same millisecond keep the order given
    (started before done). Events that cannot be used are added to `skipped`.
    """
    timed = [(_utc(parse_ts(f["ts"])), seq, e) for seq, e in enumerate(events) for f in (e[2],)]
    timed.sort(key=lambda t: (t[0], t[1]))
    logs = LogSet({}, skipped)
    for ts, _seq, (name, n, f) in timed:
        why = _apply_event(logs, ts, f)
        if why:
            skipped.append(Skipped(name, n, why))
    return logs


def _apply_event(logs: LogSet, ts: datetime, f: dict[str, str]) -> str:
    """Fold one event into the log set; returns why it was unusable, or ''."""
    ev = f["event"]
    run_id = f.get("run")
    if ev in LIFE_EVENTS and f.get("worker"):
        life = logs.workers.setdefault(f["worker"], WorkerLife(f["worker"]))
        if ev == "worker_ready":
            life.ready.append((ts, f.get("queue", "")))
        else:
            life.stopped.append(ts)
        return ""
    if ev not in TASK_EVENTS and ev not in EMIT_EVENTS and ev != "reconnected":
        return ""  # shutdown_*, connection_lost ...: not about a task
    if not run_id and ev in TASK_EVENTS and f.get("task"):
        # A message another tool published carries no run id: it belongs to no run.
        run = logs.untracked
    elif not run_id:
        return ""
    else:
        run = logs.runs.setdefault(run_id, Run(run_id))
    if ev in EMIT_EVENTS:
        run.emitted.update({k: v for k, v in f.items() if k != "ts"})
        run.emitted[ev] = f["ts"]
        if ev in ("emit_done", "emit_failed") and f.get("republished", "0").isdigit():
            run.republished = int(f.get("republished", "0"))
        return ""
    if ev == "reconnected":  # the emitter's (it has run=); workers' lines have none
        run.emitter_reconnects += 1
        return ""
    if not f.get("task"):
        return f"{ev} event without task="
    if ev == "started" or (ev == "failed" and f.get("reason", "").startswith("poison")):
        # Lines are folded in time order, so the worker's latest ready is its queue now.
        seen = logs.workers.get(f.get("worker", ""))
        queue = max(seen.ready)[1] if seen and seen.ready else run.emitted.get("queue", "")
        logs.deliveries[queue] += 1
    try:
        _apply(run, ts, f)
    except ValueError as exc:
        return f"{ev} event with a bad value ({exc})"
    return ""


def _int(value: str | None, default: int) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else default


def _apply(run: Run, ts: datetime, f: dict[str, str]) -> None:
    tid = f["task"]
    row = _int(f.get("row"), -1)
    rec = run.tasks.setdefault(tid, TaskRecord(tid, row if row >= 0 else None))
    if rec.row is None and row >= 0:
        rec.row = row
    ev, worker = f["event"], f.get("worker", "?")
    if ev == "started":
        rec.body = f.get("body", rec.body)
        rec.dots = _int(f.get("dots"), rec.dots)
        rec.attempts.append(
            Attempt(worker, ts, f.get("redelivered") == "true", _int(f.get("attempt"), 1))
        )
        return
    if ev == "dead_lettered":
        rec.dead_lettered = True
        return
    if ev == "ack_lost":
        rec.ack_lost += 1
        return
    if ev == "retry":
        return
    # done, failed, requeued: closes this worker's latest open attempt
    for a in reversed(rec.attempts):
        if a.worker == worker and a.end is None:
            a.end = ts
            a.outcome = ev
            a.reason = f.get("reason", "")
            a.seconds = float(f["seconds"]) if f.get("seconds") else (ts - a.start).total_seconds()
            return
    if ev == "done":  # its `started` line was lost (rotated away, garbled): still count it
        secs = float(f["seconds"]) if f.get("seconds") else 0.0
        start = ts - timedelta(seconds=secs)
        rec.attempts.append(
            Attempt(worker, start, False, _int(f.get("attempt"), 1), ts, "done", secs)
        )


def worker_life(logs: LogSet, name: str) -> WorkerLife:
    """What the logs say of a worker's life (nothing, for a worker they never saw start)."""
    return logs.workers.get(name) or WorkerLife(name)


def run_order(run: Run) -> tuple[datetime, str]:
    """When a run began, for putting runs in order: its emit_started line, else its first
    task event, else the time in its id. Run ids alone sort by time only to the second
    (two emits in one second get random suffixes in any order)."""
    when = run.emitted.get("emit_started") or run.emitted.get("emit_done")
    if when:
        return _utc(parse_ts(when)), run.run_id
    starts = [a.start for t in run.tasks.values() for a in t.attempts]
    if starts:
        return min(starts), run.run_id
    m = re.match(r"(\d{8}T\d{6})", run.run_id)
    stamp = datetime.strptime(m[1], "%Y%m%dT%H%M%S") if m else datetime.min
    return stamp.replace(tzinfo=timezone.utc), run.run_id


def latest_run(logs: LogSet) -> Run | None:
    """The newest run that was emitted."""
    emitted = [r for r in logs.runs.values() if r.emitted]
    pool = emitted or list(logs.runs.values())
    return max(pool, key=run_order) if pool else None


def all_runs(logs: LogSet) -> list[Run]:
    """Every run, oldest first."""
    return sorted(logs.runs.values(), key=run_order)
