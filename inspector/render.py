"""The report as a person reads it (text), and as scripts read it (JSON, CSV).

The --json layout is documented in docs/REPORT.md; the timeline lives in
inspector/timeline.py.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inspector.analysis import Audit, Figures, Redelivery, RunSummary
from inspector.runs import Run, Skipped

#: Version of the --json layout (docs/REPORT.md); bump it when a field changes meaning.
JSON_SCHEMA = 1
#: Body characters shown in the per-task table.
BODY_COLUMN = 24


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


def render_text(run: Run, s: RunSummary) -> str:
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


def run_json(run: Run, s: RunSummary) -> dict[str, Any]:
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


def report_json(log_dir: Path, pairs: list[tuple[Run, RunSummary]], skipped: list[Skipped]) -> dict:
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


def report_csv(pairs: list[tuple[Run, RunSummary]]) -> str:
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
