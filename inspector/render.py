"""The report as a person reads it (text), and as scripts read it (JSON, CSV).

The --json layout is documented in docs/REPORT.md; the timeline lives in
inspector/timeline.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inspector.analysis import Figures, Redelivery, RunSummary, UntrackedSummary, times
from inspector.results import job_json
from inspector.whereabouts import Whereabouts
from utils.eventlog.jobs import JobRecord
from utils.eventlog.records import UNFINISHED, Run, Skipped
from utils.eventlog.schema import DONE, EMIT_DONE, REQUEUED
from utils.rowset import RowSet
from utils.text import plural, safe, wrap_prose

#: Version of the --json layout (docs/REPORT.md); bump it when a field changes meaning.
JSON_SCHEMA = 2
#: Body characters shown in the per-task table.
BODY_COLUMN = 20
#: Worker-name characters shown in the per-task table.
WORKER_COLUMN = 14
#: How the per-task table marks a delivery that did not end in done.
OUTCOME_NOTES = {REQUEUED: "given back"}


#: Missing rows listed one by one in --json and --csv; past this, by ranges (docs/REPORT.md).
MISSING_LISTED = 10_000


def _rows_text(rows: list[int] | RowSet, limit: int = 12) -> str:
    if isinstance(rows, RowSet):  # by ranges: 1-4, 6, 9-20000000
        return rows.text(limit)
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
    return f" ({times(r)})" if r is not None else ""


def _plural(n: int, word: str, words: str = "") -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def render_text(
    run: Run,
    s: RunSummary,
    w: Whereabouts | None = None,
    position: str = "",
    width: int | None = None,
) -> str:
    """The report as a person reads it.

    position: "the latest of 5 in logs/" when the run was picked from several. width: the
    terminal's columns, to wrap prose at words and cut the rows column (None: no limit).
    """
    e = run.emitted
    status = "" if EMIT_DONE in run.emitted else f" [emit {run.emit_status}]"
    what = (
        f"{plural(s.audit.emitted, 'task')} from {safe(str(e.get('source', '?')))} "
        f"to queue {safe(str(e.get('queue', '?')))} (order: {s.figures.order}){status}"
    )
    head = (
        [f"run {safe(s.run_id)}, {position} (--all for every run, --run ID for one)", what]
        if position
        else [f"run {safe(s.run_id)}: {what}"]
    )
    table = [
        "",
        f"{'worker':<20} {'tasks':>5} {'busy s':>7} {'util':>5} {'first start':>12} "
        f"{'last end':>12}  rows",
    ]
    for wk in s.workers:
        cells = (
            f"{safe(wk.name, 20):<20} {wk.tasks:>5} {wk.busy:>7.2f} {wk.utilisation:>5.0%} "
            f"{_clock(wk.first_start):>12} {_clock(wk.last_end):>12}  "
        )
        table.append(cells + _rows_fit(wk.rows, width - len(cells) if width else None))
    table += [
        "",
        f"{'row':>4}  {'body':<{BODY_COLUMN}} {'worker':<{WORKER_COLUMN}} {'start':>12} "
        f"{'secs':>6} {'att':>3}  notes",
    ]
    held = set(w.active) if w is not None else set()
    for t in s.tasks:
        for a in t.attempts:
            secs = f"{a.seconds:.2f}" if a.seconds is not None else "-"
            outcome = a.outcome
            if outcome == UNFINISHED and a is t.attempts[-1] and t.row in held:
                outcome = "in progress"
            notes = ["redelivered"] if a.redelivered else []
            if outcome != DONE:
                notes.append(f"({OUTCOME_NOTES.get(outcome, outcome)})")
            body = safe(t.body, BODY_COLUMN)
            table.append(
                f"{t.row if t.row is not None else '-':>4}  {body:<{BODY_COLUMN}} "
                f"{safe(a.worker, WORKER_COLUMN):<{WORKER_COLUMN}} {_clock(a.start):>12} {secs:>6} "
                f"{a.attempt:>3}  {' '.join(notes)}".rstrip()
            )
    prose: list[str] = []
    f = s.figures
    if f.makespan:
        crew = _plural(f.workers, "worker")
        if f.busy_workers != f.workers:
            crew += f" ({f.busy_workers} finished tasks: the schedules are for {f.busy_workers})"
        prose += [
            "",
            f"makespan{' so far' if w is not None and w.running else ''} {f.makespan:.2f} s "
            f"with {crew}, against:",
            f"  lower bound {f.lower_bound:.2f} s{_ratio_text(f, f.lower_bound)}",
            f"  greedy schedule for the emitted order {f.greedy:.2f} s{_ratio_text(f, f.greedy)}",
            f"  LPT {f.lpt:.2f} s{_ratio_text(f, f.lpt)}",
            f"  round robin (no prefetch limit) {f.round_robin:.2f} s"
            f"{_ratio_text(f, f.round_robin)}",
            s.verdict,
        ]
    prose += ["", *render_audit(s, w)]
    steps = next_steps(run, s, w)
    if steps:
        prose += ["", *(f"next: {step}" for step in steps)]
    return "\n".join([*wrap_prose(head, width), *table, *wrap_prose(prose, width)])


def _rows_fit(rows: list[int], room: int | None) -> str:
    """The rows column, shortened with … to fit room characters (None: the first 12)."""
    text = _rows_text(rows)
    if room is None or len(text) <= room:
        return text
    shown = sorted(rows)
    while shown:
        shown.pop()
        cut = ", ".join(str(r) for r in shown) + ", …"
        if len(cut) <= room:
            return cut
    return "…"


def render_audit(s: RunSummary, w: Whereabouts | None = None) -> list[str]:
    """The audit lines: done once, more than once (with cause), where the rest are."""
    au = s.audit
    lines = [
        f"audit: {au.emitted} emitted, {len(au.once)} done once, {len(au.duplicates)} done "
        f"more than once, {len(au.missing)} missing, {len(au.dead)} dead-lettered"
        + (f", {len(w.unjudged)} cannot be judged" if w is not None and w.unjudged else "")
    ]
    if w is not None:
        lines += [f"  {x}" for x in _whereabouts_lines(w)]
    for d in au.duplicates:
        lines.append(
            f"  duplicate: row {d.row} ({safe(d.task_id)}) done {d.times_done} times "
            f"by {safe(', '.join(d.workers))}: {d.cause}"
        )
    for d in au.redelivered:
        lines.append(
            f"  redelivered: row {d.row} ({safe(d.task_id)}) went to {safe(', '.join(d.workers))}, "
            f"done {plural(d.times_done, 'time')}: {d.cause}"
        )
    if au.missing:
        why = (
            " (neither done, in the queue, in progress nor dead-lettered)"
            if w is not None and w.judged_from == "broker"
            else ""
        )
        lines.append(f"  missing rows: {_rows_text(au.missing, 30)}{why}")
    if au.dead:
        dead = [r for r in au.dead if r is not None]
        lines.append(f"  dead-lettered rows: {_rows_text(dead, 30)}")
    return lines


def _whereabouts_lines(w: Whereabouts) -> list[str]:
    """Where the tasks not done are: the broker's counts, or why they are unknown."""
    if w.unjudged:
        n = len(w.unjudged)
        return [
            f"{w.unjudged_why}: {'this row' if n == 1 else f'these {n} rows'} cannot be judged "
            "(no done or dead_lettered line here, and the broker asked cannot say where "
            f"{'it is' if n == 1 else 'they are'}): not called missing; rows "
            f"{_rows_text(w.unjudged, 30)}"
        ]
    if w.judged_from == "logs":
        lines = [w.note]
        if w.in_progress:
            lines.append(f"in progress, as the logs show: {_plural(w.in_progress, 'task')}")
        if w.missing:
            lines.append("without the broker, a task still waiting in the queue looks missing")
        return lines
    if not (w.running or w.left or w.dead_unlogged):
        return []  # everything is done or dead-lettered: the queue has nothing to add
    lines = []
    q = w.queue
    if q is not None:
        others = (
            f" ({w.foreign_consumers} not {'a worker' if w.foreign_consumers == 1 else 'workers'}"
            " of these logs)"
            if w.foreign_consumers
            else ""
        )
        unacked = "unknown" if q.unacked is None else str(q.unacked)
        dead = "none" if q.dead is None else str(q.dead)
        lines.append(
            f"queue {safe(q.name)} now: ready {q.ready}, unacked {unacked}, "
            f"{_plural(q.consumers, 'consumer')}{others}; dead letters {dead}"
        )
    if w.note:
        lines.append(w.note)
    if w.running:
        busy = w.in_progress + w.in_progress_elsewhere
        elsewhere = (
            f" ({w.in_progress_elsewhere} by consumers that write no log here)"
            if w.in_progress_elsewhere
            else ""
        )
        lines.append(
            f"run in progress: waiting {w.waiting}, in progress {busy}{elsewhere}, done {w.done}"
        )
        if w.unpublished:
            lines.append(
                f"emit has not logged its end: {_plural(w.unpublished, 'task')} not seen yet "
                "may not be published yet (if emit was killed, they never will be)"
            )
    if w.dead_unlogged:
        lines.append(
            f"{_plural(w.dead_unlogged, 'task')} in the dead-letter queue with no "
            "dead_lettered line here (the broker's delivery limit, or a worker elsewhere)"
        )
    if w.taken_elsewhere:
        n = len(w.left)
        lines.append(
            f"{_plural(n, 'task')} left the queue without a done event in these logs: another "
            "consumer (the tutorial's worker.py, amqp-get) or a worker on another machine "
            f"took {'it' if n == 1 else 'them'} ({w.evidence}); rows {_rows_text(w.left, 30)}"
        )
    elif w.left and w.evidence:
        lines.append(f"no other consumer accounts for the missing rows: {w.evidence}")
    return lines


def next_steps(run: Run, s: RunSummary, w: Whereabouts | None) -> list[str]:
    """What to do next, when there is something to do."""
    steps = []
    if w is not None and w.unjudged:
        emitted = run.emitted.get("url")
        steps.append(
            "ask the broker and vhost the run was emitted to: --url or AMQP_URL"
            + (f" (its emit line says {safe(emitted, 200)})" if emitted else "")
            + ", and --queue if it was another queue"
        )
    if w is not None and w.running:
        if w.queue is not None and w.waiting and not w.queue.consumers:
            steps.append("no worker is consuming the queue: start one with 'work'")
        if w.waiting or w.in_progress:
            steps.append("'tasks wait' returns once every task is done; then 'tasks report' again")
        if w.in_progress_elsewhere:
            steps.append(
                f"{_plural(w.in_progress_elsewhere, 'task')} held by another consumer will not "
                "show as done in these logs"
            )
    if s.audit.missing:
        if w is None or w.judged_from == "logs":
            steps.append("if no worker is running, start one with 'work': it takes what waits")
        steps.append(_resend(run, s.audit.missing))
    if s.audit.dead:
        steps.append("'tasks dead' lists the dead letters; 'tasks dead --requeue' retries them")
    return steps


def _resend(run: Run, rows: RowSet) -> str:
    """The emit commands that send rows again, one per run of consecutive rows."""
    source = run.emitted.get("source")
    if not source or source in ("-", "--message"):
        return "to send the missing tasks again, run 'emit' with them"
    spans = rows.spans
    cmds = [f"'emit {source} --start-row {a} --limit {b - a + 1}'" for a, b in spans[:3]]
    more = f" and {len(spans) - 3} more" if len(spans) > 3 else ""
    return (
        f"to send the missing rows again: {', '.join(cmds)}{more} "
        "(with the options of the first emit)"
    )


def _redelivery_json(d: Redelivery) -> dict[str, Any]:
    return {
        "row": d.row,
        "task": d.task_id,
        "times_done": d.times_done,
        "workers": d.workers,
        "cause": d.cause,
    }


def _whereabouts_json(w: Whereabouts | None) -> dict[str, Any] | None:
    if w is None:
        return None
    q = w.queue
    return {
        "judged_from": w.judged_from,
        "note": w.note,
        "running": w.running,
        "done": w.done,
        "waiting": w.waiting,
        "in_progress": w.in_progress,
        "in_progress_elsewhere": w.in_progress_elsewhere,
        "dead_unlogged": w.dead_unlogged,
        "unpublished": w.unpublished,
        "left_queue": w.left.first(MISSING_LISTED),
        "cannot_judge": w.unjudged.first(MISSING_LISTED),
        "cannot_judge_why": w.unjudged_why or None,
        "taken_elsewhere": w.taken_elsewhere,
        "evidence": w.evidence,
        "queue": None
        if q is None
        else {
            "name": q.name,
            "exists": q.exists,
            "ready": q.ready,
            "unacked": q.unacked,
            "consumers": q.consumers,
            "consumers_not_in_logs": w.foreign_consumers,
            "dead": q.dead,
        },
    }


def run_json(
    run: Run, s: RunSummary, w: Whereabouts | None = None, steps: list[str] | None = None
) -> dict[str, Any]:
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
            "busy_workers": f.busy_workers,
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
                "name": wk.name,
                "tasks": wk.tasks,
                "rows": sorted(wk.rows),
                "busy_seconds": round(wk.busy, 3),
                "own_seconds": round(wk.span, 3),
                "utilisation": round(wk.utilisation, 4),
                "first_start": _iso(wk.first_start),
                "last_end": _iso(wk.last_end),
            }
            for wk in s.workers
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
                        **job_json(a.job),
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
            "missing": au.missing.first(MISSING_LISTED),
            "missing_count": len(au.missing),
            "missing_ranges": [list(span) for span in au.missing.spans],
            "dead_lettered": au.dead,
            "ok": au.ok,
        },
        "whereabouts": _whereabouts_json(w),
        "next": steps or [],
    }


def _round(x: float | None) -> float | None:
    return round(x, 4) if x is not None else None


def report_json(
    log_dir: Path,
    shown: Sequence[tuple[Run, RunSummary, Whereabouts | None]],
    skipped: list[Skipped],
    runs_in_logs: int,
    untracked: UntrackedSummary,
) -> dict:
    """The whole --json document: the runs shown, untracked messages, the lines skipped."""
    return {
        "schema": JSON_SCHEMA,
        "log_dir": str(log_dir),
        "runs_in_logs": runs_in_logs,
        "runs": [run_json(r, s, w, next_steps(r, s, w)) for r, s, w in shown],
        "untracked": untracked_json(untracked),
        "skipped": [{"file": k.file, "line": k.line, "why": k.why} for k in skipped],
    }


#: What json.dumps(..., ensure_ascii=False) leaves raw that a terminal acts on: DEL, C1
#: and the bidi overrides (it escapes C0 itself).
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def json_text(doc: dict) -> str:
    """The --json document as text: readable UTF-8, and the characters that act on a
    terminal as \\u escapes, so that it prints safely and parses back to the same data."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def render_untracked(u: UntrackedSummary) -> str:
    """One line about the messages other tools published (no run id), or '' if none."""
    if not u.deliveries:
        return ""
    by = ", ".join(f"{safe(name)} {n}" for name, n in sorted(u.done_by.items()))
    parts = [f"{u.done} done" + (f" ({by})" if by else "")]
    if u.failed:
        parts.append(f"{u.failed} failed")
    if u.given_back:
        parts.append(f"{u.given_back} given back by a cold stop")
    if u.unfinished:
        parts.append(f"{u.unfinished} unfinished")
    text = (
        "untracked messages (published by other tools, with no run id): "
        f"{_plural(u.deliveries, 'delivery', 'deliveries')}, {', '.join(parts)}"
    )
    if u.redeliveries:
        text += (
            f"; {u.redeliveries} of the deliveries were redeliveries, which may repeat a "
            "message counted already"
        )
    return text


def untracked_json(u: UntrackedSummary) -> dict[str, Any]:
    """The untracked messages as plain data."""
    return {
        "deliveries": u.deliveries,
        "done": u.done,
        "failed": u.failed,
        "given_back": u.given_back,
        "unfinished": u.unfinished,
        "redeliveries": u.redeliveries,
        "done_by": u.done_by,
        "tasks": [
            {
                "task": t.task_id,
                "body": t.body,
                "history": [
                    {
                        "worker": a.worker,
                        "start": _iso(a.start),
                        "end": _iso(a.end),
                        "outcome": a.outcome,
                        "redelivered": a.redelivered,
                    }
                    for a in t.attempts
                ],
            }
            for t in u.tasks
        ],
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
    "exit_code",
    "signal",
]


def _exit_status(job: JobRecord | None) -> tuple[Any, Any]:
    """An attempt's exit_code and signal columns ("" where none)."""
    if job is None:
        return "", ""
    return ("" if job.exit_code is None else job.exit_code), (
        "" if job.signal is None else job.signal
    )


def report_csv(pairs: list[tuple[Run, RunSummary]], escaped: bool = False) -> str:
    """One CSV line per delivery (attempt), plus one `missing` line per row never seen done.

    The text of a task is written as it is, for the script that reads the file; `escaped`
    (stdout is a terminal) shows it through safe() instead, as `tasks results` does.
    """
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    shown = safe if escaped else str
    for _run, s in pairs:
        for t in s.tasks:
            for a in t.attempts:
                w.writerow(
                    [
                        shown(s.run_id),
                        t.row,
                        shown(t.task_id),
                        shown(t.body),
                        shown(a.worker),
                        _iso(a.start),
                        _iso(a.end) or "",
                        "" if a.seconds is None else f"{a.seconds:.3f}",
                        a.attempt,
                        str(a.redelivered).lower(),
                        a.outcome,
                        len(t.done),
                        str(t.dead_lettered).lower(),
                        *_exit_status(a.job),
                    ]
                )
        # Rows that no worker ever started: one line each, the first MISSING_LISTED; past
        # those, one line per range of rows ("A-B" in the row column).
        never = s.audit.missing.without(t.row for t in s.tasks)
        listed = never.head(MISSING_LISTED)
        for row in listed:
            w.writerow([shown(s.run_id), row, *[""] * 8, "missing", 0, "false", "", ""])
        for first, last in never.without(listed).spans:
            span = str(first) if first == last else f"{first}-{last}"
            w.writerow([shown(s.run_id), span, *[""] * 8, "missing", 0, "false", "", ""])
    return out.getvalue()
