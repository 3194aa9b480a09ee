"""Reading the logs back: who did which task, when, and whether anything was lost.

Everything here is a pure function of the log lines, parsed with utils.logformat.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from utils.logformat import parse_line, parse_ts
from utils.schedule import greedy, lower_bound, lpt


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


@dataclass
class TaskRecord:
    task_id: str
    row: int | None
    body: str = ""
    dots: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    dead_lettered: bool = False
    ack_lost: int = 0

    @property
    def done(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == "done"]


@dataclass
class Run:
    """One emit run and everything the workers logged about its tasks."""

    run_id: str
    emitted: dict[str, str] = field(default_factory=dict)  # the emit_started/done fields
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    republished: int = 0

    @property
    def rows(self) -> list[int]:
        m = re.fullmatch(r"(\d+)-(\d+)", self.emitted.get("rows", ""))
        if m:
            return list(range(int(m[1]), int(m[2]) + 1))
        total = self.emitted.get("total")
        return list(range(1, int(total) + 1)) if total and total.isdigit() else []


@dataclass
class Skipped:
    file: str
    line: int
    why: str


@dataclass
class LogSet:
    runs: dict[str, Run]
    skipped: list[Skipped]


TASK_EVENTS = {"started", "done", "failed", "requeued", "dead_lettered", "ack_lost", "retry"}


def log_files(log_dir: Path) -> list[Path]:
    """Every log file we wrote, rotated ones (x.log.1 ...) oldest first."""
    files = [p for p in log_dir.glob("*.log*") if re.search(r"\.log(\.\d+)?$", p.name)]

    def order(p: Path) -> tuple[str, int]:
        m = re.search(r"\.log(?:\.(\d+))?$", p.name)
        n = int(m[1]) if m and m[1] else 0
        return (p.name[: m.start()] if m else p.name, -n)

    return sorted(files, key=order)


def read_logs(log_dir: Path) -> LogSet:
    """Parse every log file in log_dir; lines we cannot read are listed, never fatal."""
    runs: dict[str, Run] = {}
    skipped: list[Skipped] = []
    events: list[tuple[datetime, str, dict[str, str]]] = []
    for path in log_files(log_dir):
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(path.name, 0, f"unreadable: {exc.strerror}"))
            continue
        for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not raw.strip():
                continue
            fields = parse_line(raw)
            if fields is None:
                skipped.append(Skipped(path.name, n, "not a log line in our format"))
                continue
            events.append((parse_ts(fields["ts"]), path.name, fields))
    events.sort(key=lambda e: e[0])
    for ts, _name, f in events:
        ev = f["event"]
        run_id = f.get("run")
        if not run_id:
            continue
        run = runs.setdefault(run_id, Run(run_id))
        if ev in ("emit_started", "emit_done", "emit_failed"):
            run.emitted.update({k: v for k, v in f.items() if k not in ("ts",)})
            run.emitted[ev] = f["ts"]
            if ev != "emit_started" and f.get("republished", "0").isdigit():
                run.republished = int(f["republished"])
            continue
        if ev not in TASK_EVENTS or "task" not in f:
            continue
        _apply(run, ts, f)
    return LogSet(runs, skipped)


def _apply(run: Run, ts: datetime, f: dict[str, str]) -> None:
    tid = f["task"]
    row = int(f["row"]) if f.get("row", "").isdigit() else None
    rec = run.tasks.setdefault(tid, TaskRecord(tid, row))
    ev, worker = f["event"], f.get("worker", "?")
    if ev == "started":
        rec.body = f.get("body", rec.body)
        rec.dots = int(f.get("dots", "0") or 0)
        rec.attempts.append(
            Attempt(worker, ts, f.get("redelivered") == "true", int(f.get("attempt", "1") or 1))
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
            a.seconds = float(f["seconds"]) if f.get("seconds") else (ts - a.start).total_seconds()
            return


def latest_run(logs: LogSet) -> Run | None:
    """The newest run that was emitted (run ids sort by time)."""
    emitted = [r for r in logs.runs.values() if r.emitted]
    pool = emitted or list(logs.runs.values())
    return max(pool, key=lambda r: r.run_id) if pool else None


@dataclass
class WorkerStats:
    name: str
    tasks: int = 0
    rows: list[int] = field(default_factory=list)
    busy: float = 0.0
    first_start: datetime | None = None
    last_end: datetime | None = None
    utilisation: float = 0.0


@dataclass
class Audit:
    emitted: int
    once: list[int]
    duplicates: list[tuple[int | None, str, int, str]]  # row, task id, times done, cause
    missing: list[int]
    dead: list[int | None]


@dataclass
class Summary:
    """The facts `tasks report` shows, for one run."""

    run_id: str
    workers: list[WorkerStats]
    tasks: list[TaskRecord]
    audit: Audit
    makespan: float
    lower_bound: float
    greedy: float
    lpt: float
    order: str
    verdict: str


def summarise(run: Run) -> Summary:
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

    # The best schedules for the emitted order, measured in the units the run used:
    # each task's own measured seconds from its first successful attempt.
    order = run.emitted.get("order", "file")
    timed = [t for t in tasks if t.done]
    if order == "longest-first":
        timed.sort(key=lambda t: (-t.dots, t.row or 0))
    durations = [t.done[0].seconds or 0.0 for t in timed]
    n = max(1, len([w for w in workers if w.tasks]))
    g = greedy(durations, n).makespan if durations else 0.0
    best = lpt(durations, n).makespan if durations else 0.0
    lb = lower_bound(durations, n)
    audit = _audit(run, tasks)
    target = g if order == "file" else best
    if makespan and target:
        pct = (makespan / target - 1) * 100
        verdict = (
            f"fair dispatch: within {max(pct, 0):.0f}% of the "
            f"{'greedy' if order == 'file' else 'LPT'} schedule for this order"
        )
    else:
        verdict = "no finished tasks to judge"
    return Summary(run.run_id, workers, tasks, audit, makespan, lb, g, best, order, verdict)


def _audit(run: Run, tasks: list[TaskRecord]) -> Audit:
    rows = run.rows
    done_rows = {t.row for t in tasks if t.done and t.row is not None}
    dead_rows = {t.row for t in tasks if t.dead_lettered}
    once = sorted(t.row for t in tasks if len(t.done) == 1 and t.row is not None)
    dups = [(t.row, t.task_id, len(t.done), _cause(t, run)) for t in tasks if len(t.done) > 1]
    missing = [r for r in rows if r not in done_rows and r not in dead_rows]
    dead = sorted((t.row for t in tasks if t.dead_lettered), key=lambda r: r or 0)
    return Audit(len(rows) or len(tasks), once, dups, missing, dead)


def _cause(t: TaskRecord, run: Run) -> str:
    if t.ack_lost:
        return "redelivered after a lost ack"
    if any(a.outcome == "unfinished" for a in t.attempts[:-1]):
        return "redelivered after a worker died mid-task"
    if any(a.outcome == "requeued" for a in t.attempts):
        return "given back by a cold stop, then redone"
    if run.republished and not any(a.redelivered for a in t.attempts):
        return "republished by the emitter after a lost connection"
    if any(a.redelivered for a in t.attempts):
        return "redelivered by the broker (connection lost before the ack)"
    return "unknown: the logs show no cause"


def worker_rows(summary: Summary) -> dict[str, list[int]]:
    """Which rows each worker finished, for tests and the demo."""
    out: dict[str, list[int]] = defaultdict(list)
    for t in summary.tasks:
        for a in t.done:
            if t.row is not None:
                out[a.worker].append(t.row)
    return dict(out)


def _rows_text(rows: list[int], limit: int = 12) -> str:
    text = ", ".join(str(r) for r in sorted(rows)[:limit])
    return text + (", …" if len(rows) > limit else "")


def render_text(run: Run, s: Summary) -> str:
    """The report as a person reads it."""
    e = run.emitted
    lines = [
        f"run {s.run_id}: {s.audit.emitted} tasks from {e.get('source', '?')} "
        f"to queue {e.get('queue', '?')} (order: {s.order})",
        "",
        f"{'worker':<24} {'tasks':>5} {'busy s':>7} {'util':>5}  rows",
    ]
    for w in s.workers:
        lines.append(
            f"{w.name:<24} {w.tasks:>5} {w.busy:>7.2f} {w.utilisation:>5.0%}  {_rows_text(w.rows)}"
        )
    lines += [
        "",
        f"{'row':>4}  {'body':<24} {'worker':<20} {'start':>12} {'secs':>6} {'att':>3}  redelivered",
    ]
    for t in s.tasks:
        for a in t.attempts:
            start = a.start.strftime("%H:%M:%S.%f")[:-3]
            secs = f"{a.seconds:.2f}" if a.seconds is not None else "-"
            flag = "yes" if a.redelivered else "no"
            note = "" if a.outcome == "done" else f"  ({a.outcome})"
            lines.append(
                f"{t.row if t.row is not None else '-':>4}  {t.body[:24]:<24} {a.worker[:20]:<20} "
                f"{start:>12} {secs:>6} {a.attempt:>3}  {flag}{note}"
            )
    if s.makespan:
        lines += [
            "",
            f"makespan {s.makespan:.2f} s; lower bound {s.lower_bound:.2f} s "
            f"({s.makespan / s.lower_bound if s.lower_bound else 0:.2f}x); greedy schedule "
            f"{s.greedy:.2f} s ({s.makespan / s.greedy if s.greedy else 0:.2f}x); "
            f"LPT {s.lpt:.2f} s",
            s.verdict,
        ]
    au = s.audit
    lines += [
        "",
        f"audit: {au.emitted} emitted, {len(au.once)} done once, {len(au.duplicates)} done "
        f"more than once, {len(au.missing)} missing, {len(au.dead)} dead-lettered",
    ]
    for row, tid, times, cause in au.duplicates:
        lines.append(f"  duplicate: row {row} ({tid}) done {times} times: {cause}")
    if au.missing:
        lines.append(f"  missing rows: {_rows_text(au.missing, 30)}")
    if au.dead:
        dead = [r for r in au.dead if r is not None]
        lines.append(f"  dead-lettered rows: {_rows_text(dead, 30)}")
    return "\n".join(lines)
