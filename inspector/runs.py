"""Reading the logs back into runs: each run's emit lines, and every task's attempts.

Everything here is a pure function of the log lines, parsed with utils.logformat. A line
we cannot use is kept as a Skipped (file, line, why), never fatal.
"""

from __future__ import annotations

import re
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
        """The rows the emitter said it sent (rows=A-B, else 1..total)."""
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
class LogSet:
    """Every run found in a log folder, and the lines that could not be used."""

    runs: dict[str, Run]
    skipped: list[Skipped]


TASK_EVENTS = {"started", "done", "failed", "requeued", "dead_lettered", "ack_lost", "retry"}
EMIT_EVENTS = {"emit_started", "emit_done", "emit_failed"}


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
    runs: dict[str, Run] = {}
    skipped: list[Skipped] = []
    events: list[tuple[datetime, int, str, int, dict[str, str]]] = []
    seq = 0
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
            seq += 1
            events.append((_utc(parse_ts(fields["ts"])), seq, path.name, n, fields))
    # seq keeps lines with the same millisecond in file order (started before done).
    events.sort(key=lambda e: (e[0], e[1]))
    for ts, _seq, name, n, f in events:
        why = _apply_event(runs, ts, f)
        if why:
            skipped.append(Skipped(name, n, why))
    return LogSet(runs, skipped)


def _apply_event(runs: dict[str, Run], ts: datetime, f: dict[str, str]) -> str:
    """Fold one event into the runs; returns why it was unusable, or ''."""
    ev = f["event"]
    run_id = f.get("run")
    if ev not in TASK_EVENTS and ev not in EMIT_EVENTS and ev != "reconnected":
        return ""  # worker_ready, shutdown_* ...: not about a task
    if not run_id:
        if ev in TASK_EVENTS and f.get("task"):
            return f"{ev} event without run="
        return ""
    run = runs.setdefault(run_id, Run(run_id))
    if ev in EMIT_EVENTS:
        run.emitted.update({k: v for k, v in f.items() if k != "ts"})
        run.emitted[ev] = f["ts"]
        if ev != "emit_started" and f.get("republished", "0").isdigit():
            run.republished = int(f.get("republished", "0"))
        return ""
    if ev == "reconnected":  # the emitter's (it has run=); workers' lines have none
        run.emitter_reconnects += 1
        return ""
    if not f.get("task"):
        return f"{ev} event without task="
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


def latest_run(logs: LogSet) -> Run | None:
    """The newest run that was emitted (run ids sort by time)."""
    emitted = [r for r in logs.runs.values() if r.emitted]
    pool = emitted or list(logs.runs.values())
    return max(pool, key=lambda r: r.run_id) if pool else None


def all_runs(logs: LogSet) -> list[Run]:
    """Every run, oldest first."""
    return sorted(logs.runs.values(), key=lambda r: r.run_id)
