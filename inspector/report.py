"""Reading the logs back: who did which task, when, and whether anything was lost.

Everything here is a pure function of the log lines, parsed with utils.logformat.
Rendering (text, JSON, CSV) lives here too; the picture lives in inspector/timeline.py.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from inspector.schedule import greedy, lower_bound, lpt, round_robin
from utils.logformat import parse_line, parse_ts

#: Version of the --json layout (docs/REPORT.md); bump it when a field changes meaning.
JSON_SCHEMA = 1
#: Body characters shown in the per-task table.
BODY_COLUMN = 24


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
        return [a for a in self.attempts if a.outcome == "done"]

    @property
    def redelivered(self) -> bool:
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
class Redelivery:
    """A task that was delivered more than once, and what the logs say caused it."""

    row: int | None
    task_id: str
    times_done: int
    workers: list[str]
    cause: str


@dataclass
class Audit:
    emitted: int
    once: list[int]
    duplicates: list[Redelivery]  # done more than once
    redelivered: list[Redelivery]  # delivered more than once but done once
    missing: list[int]
    dead: list[int | None]

    @property
    def ok(self) -> bool:
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
        return self.makespan / figure if self.makespan and figure else None


@dataclass
class Summary:
    """The facts `tasks report` shows, for one run."""

    run_id: str
    workers: list[WorkerStats]
    tasks: list[TaskRecord]
    audit: Audit
    figures: Figures
    verdict: str
    start: datetime | None = None

    # Older callers read these directly.
    @property
    def makespan(self) -> float:
        return self.figures.makespan

    @property
    def lower_bound(self) -> float:
        return self.figures.lower_bound

    @property
    def greedy(self) -> float:
        return self.figures.greedy

    @property
    def lpt(self) -> float:
        return self.figures.lpt

    @property
    def order(self) -> str:
        return self.figures.order


def summarise(run: Run) -> Summary:
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
    return Summary(
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


def worker_rows(summary: Summary) -> dict[str, list[int]]:
    """Which rows each worker finished, for tests and the demo."""
    out: dict[str, list[int]] = defaultdict(list)
    for t in summary.tasks:
        for a in t.done:
            if t.row is not None:
                out[a.worker].append(t.row)
    return dict(out)


# -- rendering ------------------------------------------------------------------------------


def _rows_text(rows: list[int], limit: int = 12) -> str:
    text = ", ".join(str(r) for r in sorted(rows)[:limit])
    return text + (", …" if len(rows) > limit else "")


def _clock(ts: datetime | None) -> str:
    return ts.strftime("%H:%M:%S.%f")[:-3] if ts else "-"


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ratio_text(f: Figures, figure: float) -> str:
    r = f.ratio(figure)
    return f" ({r:.2f}x)" if r is not None else ""


def render_text(run: Run, s: Summary) -> str:
    """The report as a person reads it."""
    e = run.emitted
    status = "" if run.emit_status == "done" else f" [emit {run.emit_status}]"
    lines = [
        f"run {s.run_id}: {s.audit.emitted} tasks from {e.get('source', '?')} "
        f"to queue {e.get('queue', '?')} (order: {s.figures.order}){status}",
        "",
        f"{'worker':<20} {'tasks':>5} {'busy s':>7} {'util':>5} {'first start':>12} "
        f"{'last end':>12}  rows",
    ]
    for w in s.workers:
        lines.append(
            f"{w.name[:20]:<20} {w.tasks:>5} {w.busy:>7.2f} {w.utilisation:>5.0%} "
            f"{_clock(w.first_start):>12} {_clock(w.last_end):>12}  {_rows_text(w.rows)}"
        )
    lines += [
        "",
        f"{'row':>4}  {'body':<{BODY_COLUMN}} {'worker':<16} {'start':>12} {'end':>12} "
        f"{'secs':>6} {'att':>3}  redelivered",
    ]
    for t in s.tasks:
        for a in t.attempts:
            secs = f"{a.seconds:.2f}" if a.seconds is not None else "-"
            note = "" if a.outcome == "done" else f"  ({a.outcome})"
            body = t.body if len(t.body) <= BODY_COLUMN else t.body[: BODY_COLUMN - 1] + "…"
            lines.append(
                f"{t.row if t.row is not None else '-':>4}  {body:<{BODY_COLUMN}} "
                f"{a.worker[:16]:<16} {_clock(a.start):>12} {_clock(a.end):>12} {secs:>6} "
                f"{a.attempt:>3}  {'yes' if a.redelivered else 'no'}{note}"
            )
    f = s.figures
    if f.makespan:
        lines += [
            "",
            f"makespan {f.makespan:.2f} s with {f.workers} worker(s); "
            f"lower bound {f.lower_bound:.2f} s{_ratio_text(f, f.lower_bound)}",
            f"greedy schedule for the emitted order {f.greedy:.2f} s{_ratio_text(f, f.greedy)}; "
            f"LPT {f.lpt:.2f} s{_ratio_text(f, f.lpt)}; "
            f"round robin (no prefetch limit) {f.round_robin:.2f} s{_ratio_text(f, f.round_robin)}",
            s.verdict,
        ]
    lines += ["", *render_audit(s.audit)]
    return "\n".join(lines)


def render_audit(au: Audit) -> list[str]:
    """The audit lines: done once, more than once (with cause), missing, dead-lettered."""
    lines = [
        f"audit: {au.emitted} emitted, {len(au.once)} done once, {len(au.duplicates)} done "
        f"more than once, {len(au.missing)} missing, {len(au.dead)} dead-lettered"
    ]
    for d in au.duplicates:
        lines.append(
            f"  duplicate: row {d.row} ({d.task_id}) done {d.times_done} times "
            f"by {', '.join(d.workers)}: {d.cause}"
        )
    for d in au.redelivered:
        lines.append(
            f"  redelivered: row {d.row} ({d.task_id}) went to {', '.join(d.workers)}, "
            f"done {d.times_done} time(s): {d.cause}"
        )
    if au.missing:
        lines.append(f"  missing rows: {_rows_text(au.missing, 30)}")
    if au.dead:
        dead = [r for r in au.dead if r is not None]
        lines.append(f"  dead-lettered rows: {_rows_text(dead, 30)}")
    return lines


def _redelivery_json(d: Redelivery) -> dict[str, Any]:
    return {
        "row": d.row,
        "task": d.task_id,
        "times_done": d.times_done,
        "workers": d.workers,
        "cause": d.cause,
    }


def run_json(run: Run, s: Summary) -> dict[str, Any]:
    """One run's facts as plain data (the layout is documented in docs/REPORT.md)."""
    f, au = s.figures, s.audit
    return {
        "run": s.run_id,
        "source": run.emitted.get("source"),
        "queue": run.emitted.get("queue"),
        "order": f.order,
        "emit_status": run.emit_status,
        "republished": run.republished,
        "figures": {
            "workers": f.workers,
            "makespan": round(f.makespan, 3),
            "lower_bound": round(f.lower_bound, 3),
            "greedy": round(f.greedy, 3),
            "lpt": round(f.lpt, 3),
            "round_robin": round(f.round_robin, 3),
            "ratio_lower_bound": _round(f.ratio(f.lower_bound)),
            "ratio_greedy": _round(f.ratio(f.greedy)),
            "ratio_lpt": _round(f.ratio(f.lpt)),
            "ratio_round_robin": _round(f.ratio(f.round_robin)),
            "verdict": s.verdict,
        },
        "workers": [
            {
                "name": w.name,
                "tasks": w.tasks,
                "rows": sorted(w.rows),
                "busy_seconds": round(w.busy, 3),
                "utilisation": round(w.utilisation, 4),
                "first_start": _iso(w.first_start),
                "last_end": _iso(w.last_end),
            }
            for w in s.workers
        ],
        "tasks": [
            {
                "row": t.row,
                "task": t.task_id,
                "body": t.body,
                "worker": t.done[-1].worker if t.done else None,
                "start": _iso(t.done[-1].start) if t.done else None,
                "end": _iso(t.done[-1].end) if t.done else None,
                "seconds": t.done[-1].seconds if t.done else None,
                "attempts": len(t.attempts),
                "times_done": len(t.done),
                "redelivered": t.redelivered,
                "dead_lettered": t.dead_lettered,
                "history": [
                    {
                        "worker": a.worker,
                        "start": _iso(a.start),
                        "end": _iso(a.end),
                        "seconds": a.seconds,
                        "attempt": a.attempt,
                        "redelivered": a.redelivered,
                        "outcome": a.outcome,
                    }
                    for a in t.attempts
                ],
            }
            for t in s.tasks
        ],
        "audit": {
            "emitted": au.emitted,
            "done_once": au.once,
            "duplicates": [_redelivery_json(d) for d in au.duplicates],
            "redelivered": [_redelivery_json(d) for d in au.redelivered],
            "missing": au.missing,
            "dead_lettered": au.dead,
            "ok": au.ok,
        },
    }


def _round(x: float | None) -> float | None:
    return round(x, 4) if x is not None else None


def report_json(log_dir: Path, pairs: list[tuple[Run, Summary]], skipped: list[Skipped]) -> dict:
    """The whole --json document: the runs shown and the lines skipped."""
    return {
        "schema": JSON_SCHEMA,
        "log_dir": str(log_dir),
        "runs": [run_json(r, s) for r, s in pairs],
        "skipped": [{"file": k.file, "line": k.line, "why": k.why} for k in skipped],
    }


CSV_COLUMNS = [
    "run",
    "row",
    "task",
    "body",
    "worker",
    "start",
    "end",
    "seconds",
    "attempt",
    "redelivered",
    "outcome",
    "times_done",
    "dead_lettered",
]


def report_csv(pairs: list[tuple[Run, Summary]]) -> str:
    """One CSV line per delivery (attempt), plus one `missing` line per row never seen done."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for _run, s in pairs:
        for t in s.tasks:
            for a in t.attempts:
                w.writerow(
                    [
                        s.run_id,
                        t.row,
                        t.task_id,
                        t.body,
                        a.worker,
                        _iso(a.start),
                        _iso(a.end) or "",
                        "" if a.seconds is None else f"{a.seconds:.3f}",
                        a.attempt,
                        str(a.redelivered).lower(),
                        a.outcome,
                        len(t.done),
                        str(t.dead_lettered).lower(),
                    ]
                )
        seen = {t.row for t in s.tasks}
        for row in s.audit.missing:
            if row not in seen:  # rows that no worker ever started
                w.writerow([s.run_id, row, "", "", "", "", "", "", "", "", "missing", 0, "false"])
    return out.getvalue()


def drawn_end(s: Summary, a: Attempt) -> datetime:
    """Where an attempt's bar ends: its end, or for one that never finished (a killed
    worker), the worker's next start or the end of the run."""
    if a.end is not None:
        return a.end
    later = [
        b.start for t in s.tasks for b in t.attempts if b.worker == a.worker and b.start > a.start
    ]
    if later:
        return min(later)
    assert s.start is not None
    return max(a.start, s.start + timedelta(seconds=s.figures.makespan))


def text_timeline(s: Summary, width: int = 60) -> str:
    """One line per worker: each attempt as a bar starting with its row, and the lower bound."""
    if s.start is None or not s.figures.makespan:
        return "(no finished tasks to draw)"
    scale = width / s.figures.makespan
    name_w = max(len(w.name) for w in s.workers) if s.workers else 6
    lanes: dict[str, list[str]] = {w.name: [" "] * (width + 1) for w in s.workers}
    for t in s.tasks:
        for a in t.attempts:
            end_s = (drawn_end(s, a) - s.start).total_seconds()
            fill = "=" if a.outcome == "done" else "x"  # x: failed, given back or cut off
            lo = min(width, int((a.start - s.start).total_seconds() * scale))
            hi = min(width + 1, max(lo + 1, int(end_s * scale)))
            label = ("|" + (str(t.row) if t.row is not None else "?"))[: hi - lo]
            cells = list(label.ljust(hi - lo, fill))
            lanes[a.worker][lo:hi] = cells
    lines = [f"{name:<{name_w}} {''.join(c).rstrip()}" for name, c in lanes.items()]
    lb = min(width, int(s.figures.lower_bound * scale))
    lines.append(f"{'':<{name_w}} {' ' * lb}^ lower bound {s.figures.lower_bound:.2f} s")
    lines.append(
        f"{'':<{name_w}} 0 s {'-' * max(0, width - 12)} {s.figures.makespan:.2f} s "
        "(|N = row N starts; x = not finished)"
    )
    return "\n".join(lines)
