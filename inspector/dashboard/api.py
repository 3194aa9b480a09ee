"""What /api/state and /metrics serve: the dashboard's state as JSON and as Prometheus text.

The pieces of DashboardState.snapshot() (state.py) and the whole of its metrics(), read
under the state's lock; nothing here changes it. docs/DASHBOARD.md documents both forms.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from utils.eventlog.records import WorkerLife
from utils.text import safe

if TYPE_CHECKING:
    from inspector.dashboard.state import DashboardState, RunView

#: Statuses of a worker that may take tasks.
ONLINE = ("busy", "idle")


def iso(t: float | None) -> str | None:
    """A time as the logs write it (UTC, milliseconds), or None."""
    if t is None:
        return None
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown(w: WorkerLife, status: str, run: RunView | None) -> bool:
    """Online workers, and the gone ones that worked on the shown run."""
    if status != "gone":
        return True
    return run is not None and w.name in run.workers


def worker_json(
    w: WorkerLife, status: tuple[str, str], run: RunView | None, now: float
) -> dict[str, Any]:
    counts = run.workers.get(w.name) if run else None
    cur = w.current
    task = None
    if cur is not None:
        start = cur.start.timestamp()
        task = {
            "task": cur.task,
            "run": cur.run,
            "row": cur.row,
            "body": cur.body,
            "attempt": cur.attempt,
            "redelivered": cur.redelivered,
            "started_at": iso(start),
            "seconds": round(max(0.0, now - start), 3),
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
        "last_seen": iso(seen(w)),
        "seconds_since_seen": round(max(0.0, now - seen(w)), 3),
    }


def run_json(run: RunView, now: float) -> dict[str, Any]:
    rate = run.rate(now)
    eta = run.eta(now)
    progress = None
    total = run.total
    if total:
        progress = round(min(1.0, run.finished / total), 4)
    return {
        "id": run.run_id,
        "queue": run.queue,
        "source": run.source,
        "broker": run.broker,
        "emit_status": run.emit_status,
        "emitted": total,
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


def timeline_json(
    epoch: str,
    run: RunView | None,
    since: int,
    epoch_seen: str | None,
    run_seen: str | None,
    kept: int,
) -> dict[str, Any]:
    if run is None or run.origin is None:
        return {"run": None, "origin": None, "full": True, "bars": [], "kept": kept}
    # The page's copy is whole unless it comes from another server or run, or it missed
    # bars that were dropped meanwhile: then it gets every bar kept.
    full = (
        since <= 0
        or epoch_seen != epoch
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
        "kept": kept,
        "dropped": run.dropped_seq > 0,
    }


def metrics(state: DashboardState, queue: dict[str, Any] | None, now: float) -> str:
    """The Prometheus text exposition (format 0.0.4) of the shown run and the queue."""
    run = state.shown_run()
    status = state.worker_status(now, _as_int(queue.get("consumers")) if queue else None)
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
        [(f"{{{rl}}}", run.total)] if run and run.total is not None else [],
    )
    q = queue or {}
    ql = f'{{queue="{_label(str(q.get("name", state.queue or "")))}"}}'
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
        [("", state.events)],
    )
    return "\n".join(out) + "\n"


def seen(w: WorkerLife) -> float:
    """When the worker's last line was written, in seconds since the epoch."""
    return w.last_seen.timestamp() if w.last_seen is not None else 0.0


def failure_json(x: dict[str, Any]) -> dict[str, Any]:
    return {**x, "at": iso(x["at"])}


def _as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return safe(value).replace('"', '\\"')
