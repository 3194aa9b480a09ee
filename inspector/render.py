"""The report as a person reads it (text); as scripts read it (--json, --csv), it is
inspector/render_data.py's.

The layouts are documented in docs/REPORT.md; the timeline lives in inspector/timeline.py.
"""

from __future__ import annotations

from datetime import datetime, timezone

from inspector.analysis import Figures, RunSummary, UntrackedSummary, times
from inspector.whereabouts import Whereabouts
from utils.eventlog.records import UNFINISHED, Run
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
