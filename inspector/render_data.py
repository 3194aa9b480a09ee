"""The report's machine-readable forms: --json (run_json, report_json, json_text) and --csv.

The text report is inspector/render.py's; the layouts are in docs/REPORT.md.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inspector.analysis import Redelivery, RunSummary, UntrackedSummary
from inspector.render import (
    JSON_SCHEMA,
    MISSING_LISTED,
    _iso,
    next_steps,
)
from inspector.results import job_json
from inspector.whereabouts import Whereabouts
from utils.eventlog.jobs import JobRecord
from utils.eventlog.records import Run, Skipped
from utils.text import safe


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
