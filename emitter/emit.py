"""The emit run: check the input, publish every row with confirms, log what happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from emitter.publisher import DEFAULT_WINDOW, Publisher, PublishResult
from emitter.source import CsvOptions, ReadStats, Row, iter_rows, open_source, validate_file
from utils import broker
from utils.errors import BrokerUnavailable, NothingToDo, TaskToolError
from utils.logformat import EventLog
from utils.settings import Settings, mask_url
from utils.task import Task, new_run_id


@dataclass(frozen=True)
class EmitOptions:
    """What to send and how."""

    source: str | None = None  # a path, '-' for stdin, or None with messages
    messages: tuple[str, ...] = ()
    csv: CsvOptions = field(default_factory=CsvOptions)
    order: str = "file"  # or longest-first
    window: int = DEFAULT_WINDOW
    retry_for: float = 60.0
    blocked_timeout: float = 300.0


@dataclass
class EmitReport:
    run_id: str
    total: int | None  # None: stdin, not known ahead
    stats: ReadStats
    result: PublishResult
    queue_note: str = ""


def emit(
    settings: Settings,
    opts: EmitOptions,
    *,
    log: EventLog,
    on_start: Callable[[int | None], None] = lambda total: None,
    on_confirm: Callable[[int], None] = lambda n: None,
) -> EmitReport:
    """Publish the selected rows; raise on bad input before anything is sent."""
    stats = ReadStats()
    total: int | None = None
    name = opts.source or "--message"
    if opts.source and opts.source != "-":
        checked = validate_file(opts.source, opts.csv)  # the whole file, before any publish
        total = checked.selected
    elif opts.messages:
        total = len(opts.messages)

    conn, url = broker.connect(settings, client_name="emit")
    try:
        _, info = broker.declare_queue(conn, settings)
    finally:
        conn.close()
    run_id = new_run_id()
    log.event(
        "emit_started",
        run=run_id,
        source=name,
        queue=settings.queue,
        queue_type=info.queue_type,
        url=mask_url(url),
        order=opts.order,
        total=total,
    )
    if info.note:
        log.event("queue_found", queue=settings.queue, note=info.note)
    on_start(total)

    tasks = _tasks(opts, run_id, stats)
    if opts.order == "longest-first":
        listed = sorted(tasks, key=lambda t: -t.dots)  # stable: ties keep file order
        total = len(listed)
        tasks = iter(listed)

    publisher = Publisher(
        settings,
        window=opts.window,
        retry_for=opts.retry_for,
        blocked_timeout=opts.blocked_timeout,
        on_confirm=on_confirm,
        on_event=lambda event, **kw: log.event(event, run=run_id, **kw),
        rows_ascending=opts.order == "file",
    )
    result = publisher.publish(tasks, url)
    if total is None:
        total = stats.selected
    if result.error is None and total == 0:
        raise NothingToDo(f"no tasks in {name}", "give it some rows (one task per row)")
    rows = _row_range(opts, total)
    log.event(
        "emit_done"
        if result.error is None and not result.unroutable and not result.nacked
        else "emit_failed",
        run=run_id,
        queue=settings.queue,
        rows=rows,
        total=total,
        published=result.published,
        confirmed=result.confirmed,
        republished=result.republished,
        unroutable=len(result.unroutable),
        nacked=len(result.nacked),
        blank=stats.blank,
        seconds=result.seconds,
        first_unconfirmed_row=result.first_unconfirmed_row,
        reason=result.error.message if result.error else None,
    )
    return EmitReport(run_id, total, stats, result, info.note)


def _row_range(opts: EmitOptions, total: int) -> str:
    first = opts.csv.start_row if opts.source else 1
    return f"{first}-{first + total - 1}" if total else "none"


def _tasks(opts: EmitOptions, run_id: str, stats: ReadStats) -> Iterator[Task]:
    if opts.source is None:
        for n, text in enumerate(opts.messages, start=1):
            stats.rows += 1
            stats.selected += 1
            yield Task.from_row(text, n, run_id, "--message")
        return
    with open_source(opts.source, opts.csv.encoding) as stream:
        row: Row
        for row in iter_rows(stream, opts.source, opts.csv, stats):
            yield Task.from_row(row.body, row.row, run_id, opts.source)


def failure_summary(report: EmitReport) -> TaskToolError:
    """The error for a run that did not get every row confirmed, with where to resume."""
    r = report.result
    total = report.total or 0
    k = (r.first_unconfirmed_row - 1) if r.first_unconfirmed_row else None
    resume = ""
    if k is not None:
        resume = (
            f"confirmed rows 1..{k} of {total}; rerun with --start-row {k + 1}"
            if k >= 1
            else f"no rows confirmed of {total}; rerun the same command"
        )
    reason = r.error.message if r.error else ""
    if r.unroutable:
        rows = ", ".join(str(t.row) for t in r.unroutable[:10])
        more = " ..." if len(r.unroutable) > 10 else ""
        return BrokerUnavailable(
            f"{len(r.unroutable)} task(s) could not be routed to queue (rows {rows}{more}); "
            "was the queue deleted mid-run?",
            resume or "rerun emit for those rows",
        )
    if r.nacked:
        return BrokerUnavailable(
            f"the broker refused {len(r.nacked)} task(s) after retries", resume
        )
    err = r.error or BrokerUnavailable("emit did not finish", "")
    err.message = f"{reason}; {resume}" if resume else reason
    if not err.hint:
        err.hint = "start the broker again ('make broker-up'), then rerun as said"
    return err
