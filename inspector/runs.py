"""Reading the log files back into runs: each run's emit lines, and every task's attempts.

The lines are parsed with utils/eventlog/format.py and folded by utils/eventlog/fold.py (the
fold the dashboard uses too); here are the files, and the report's ways through the runs.
A line we cannot use is kept as a Skipped (file, line, why), never fatal.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from utils.eventlog.fold import fold_events
from utils.eventlog.format import parse_line, parse_ts
from utils.eventlog.records import LogSet, Run, Skipped, WorkerLife, as_utc
from utils.eventlog.schema import EMIT_DONE, EMIT_STARTED


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


def worker_life(logs: LogSet, name: str) -> WorkerLife:
    """What the logs say of a worker's life (nothing, for a worker they never saw start)."""
    return logs.workers.get(name) or WorkerLife(name)


def run_order(run: Run) -> tuple[datetime, str]:
    """When a run began, for putting runs in order: its emit_started line, else its first
    task event, else the time in its id. Run ids alone sort by time only to the second
    (two emits in one second get random suffixes in any order)."""
    when = run.emitted.get(EMIT_STARTED) or run.emitted.get(EMIT_DONE)
    if when:
        return as_utc(parse_ts(when)), run.run_id
    starts = [a.start for t in run.tasks.values() for a in t.attempts]
    if starts:
        return min(starts), run.run_id
    m = re.match(r"(\d{8}T\d{6})", run.run_id)
    stamp = datetime.strptime(m[1], "%Y%m%dT%H%M%S") if m else datetime.min
    return stamp.replace(tzinfo=timezone.utc), run.run_id


def runs_of_queue(logs: LogSet, queue: str | None) -> list[Run]:
    """The runs emitted to `queue` (every run for None), and those whose queue these events
    do not tell (a worker's log alone has no emit line): they cannot be ruled out."""
    return [r for r in logs.runs.values() if of_queue(r, queue)]


def of_queue(run: Run, queue: str | None) -> bool:
    """Whether the run may be of `queue`: emitted to it, or to a queue not known here."""
    return queue is None or run.emitted.get("queue", queue) == queue


def queues_with_runs(logs: LogSet) -> list[str]:
    """The queues the runs in these events were emitted to."""
    return sorted({q for r in logs.runs.values() if (q := r.emitted.get("queue"))})


def latest_run(logs: LogSet, queue: str | None = None) -> Run | None:
    """The newest run that was emitted (to `queue`, if given)."""
    if queue is not None:
        mine = runs_of_queue(logs, queue)
        return max(mine, key=run_order) if mine else None
    emitted = [r for r in logs.runs.values() if r.emitted]
    pool = emitted or list(logs.runs.values())
    return max(pool, key=run_order) if pool else None


def all_runs(logs: LogSet) -> list[Run]:
    """Every run, oldest first."""
    return sorted(logs.runs.values(), key=run_order)
