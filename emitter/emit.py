"""The emit run: check the input, publish every row with confirms, log what happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from emitter.publisher import (
    DEFAULT_WINDOW,
    MAX_NACK_RETRIES,
    Publisher,
    PublishResult,
    connect_and_declare,
)
from emitter.source import CsvOptions, ReadStats, Row, iter_rows, open_source, validate_file
from utils.errors import BrokerUnavailable, NothingToDo, TaskToolError
from utils.eventlog.log import EventLog
from utils.eventlog.schema import (
    BLOCKED,
    CONNECTION_LOST,
    EMIT_DONE,
    EMIT_FAILED,
    EMIT_STARTED,
    QUEUE_FOUND,
    RECONNECTED,
    RUN_MANIFEST,
    UNBLOCKED,
)
from utils.settings import Settings, mask_url
from utils.task import Task, new_run_id, task_id
from utils.text import plural


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
    fast_path: bool = True  # emitter/fastpath.py; False (EMIT_FAST_PATH=0): plain pika only


@dataclass
class EmitReport:
    """What an emit run did, for the summary line or the failure message."""

    run_id: str
    total: int | None  # None: stdin, not known ahead
    stats: ReadStats
    result: PublishResult
    queue_note: str = ""
    resume: str = ""  # "confirmed rows 1..k of N; rerun with --start-row k+1" when unfinished
    #: Tasks already ready in the queue before this run, and its consumers then (declare-ok).
    waiting_before: int = 0
    consumers: int = 0


def emit_rows(
    settings: Settings,
    opts: EmitOptions,
    *,
    log: EventLog,
    on_start: Callable[[int | None], None] = lambda total: None,
    on_confirm: Callable[[int], None] = lambda n: None,
    on_notice: Callable[[str], None] = lambda text: None,
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
    run_id = new_run_id()
    tasks = _tasks(opts, run_id, stats)
    if opts.order == "longest-first":
        listed = sorted(tasks, key=lambda t: -t.dots)  # stable: ties keep file order
        total = len(listed)
        tasks = iter(listed)

    # One connection declares the queue, then publishes (emitter/publisher.py).
    conn, url, info = connect_and_declare(settings, opts.blocked_timeout)
    try:
        log.event(
            EMIT_STARTED,
            run=run_id,
            source=name,
            queue=settings.queue,
            queue_type=info.queue_type,
            url=mask_url(url),
            order=opts.order,
            total=total,
            waiting=info.messages,
            consumers=info.consumers,
        )
        if info.note:
            log.event(QUEUE_FOUND, queue=settings.queue, note=info.note)
        on_start(total)
        if total is not None:  # known before any row is sent: a reader knows what to expect
            _log_manifest(log, run_id, name, settings.queue, opts, total)
        publisher = Publisher(
            settings,
            window=opts.window,
            retry_for=opts.retry_for,
            blocked_timeout=opts.blocked_timeout,
            on_confirm=on_confirm,
            on_event=_event_logger(log, run_id, on_notice),
            rows_ascending=opts.order == "file",
            first_row=_first_row(opts),
            fast_path=opts.fast_path,
        )
        result = publisher.publish(tasks, url, live=opts.source == "-", connection=conn)
    finally:
        conn.close()  # nothing to do once the publisher has closed it, as it does
    known = total is not None
    total = stats.selected if total is None else total
    if result.error is None and total == 0:
        raise NothingToDo(f"no tasks in {name}", "give it some rows (one task per row)")
    if not known:
        _log_manifest(log, run_id, name, settings.queue, opts, total)
    resume = _log_end(log, run_id, settings.queue, opts, total, stats, result)
    return EmitReport(
        run_id, total, stats, result, info.note, resume, info.messages, info.consumers
    )


def _event_logger(
    log: EventLog, run_id: str, on_notice: Callable[[str], None]
) -> Callable[..., None]:
    """The publisher's events: logged with the run, and shown to a person where they matter."""

    def on_event(event: str, **kw: object) -> None:
        log.event(event, run=run_id, **kw)
        notice = _notice(event, kw)
        if notice:
            on_notice(notice)

    return on_event


def _log_end(
    log: EventLog,
    run_id: str,
    queue: str,
    opts: EmitOptions,
    total: int,
    stats: ReadStats,
    result: PublishResult,
) -> str:
    """Log how the run ended (emit_done or emit_failed); returns where to resume ('' if done)."""
    ok = result.error is None and not result.unroutable and not result.nacked
    resume = "" if ok else resume_line(opts, total, result)
    log.event(
        EMIT_DONE if ok else EMIT_FAILED,
        run=run_id,
        queue=queue,
        rows=_row_range(opts, total),
        total=total,
        published=result.published,
        confirmed=result.confirmed,
        republished=result.republished,
        unroutable=len(result.unroutable),
        nacked=len(result.nacked),
        blank=stats.blank,
        seconds=result.seconds,
        published_fast=result.published_fast,
        first_unconfirmed_row=result.first_unconfirmed_row,
        reason=result.error.message if result.error else None,
        resume=resume or None,
    )
    return resume


def _log_manifest(
    log: EventLog, run_id: str, source: str, queue: str, opts: EmitOptions, total: int
) -> None:
    """The run's manifest: every row it contains and their task ids, in one event.

    With the event stream, this is how a report on another machine knows what was emitted
    (rows are consecutive: FIRST-LAST; ids are the run id, a dash and the row).
    """
    log.event(
        RUN_MANIFEST,
        run=run_id,
        source=source,
        queue=queue,
        total=total,
        rows=_row_range(opts, total),
        task_ids=task_id(run_id, 0)[:-1] + "{row}",
    )


def _first_row(opts: EmitOptions) -> int:
    return opts.csv.start_row if opts.source else 1


def _row_range(opts: EmitOptions, total: int) -> str:
    first = _first_row(opts)
    return f"{first}-{first + total - 1}" if total else "none"


def resume_line(opts: EmitOptions, total: int, result: PublishResult) -> str:
    """Where an unfinished run stands: every row up to k is confirmed, so rerun from k+1."""
    first = _first_row(opts)
    last = first + total - 1
    unconfirmed = result.first_unconfirmed_row
    k = last if unconfirmed is None else unconfirmed - 1
    if opts.source is None:
        if k < 1:
            return f"no messages confirmed of {total}; send them all again"
        return f"confirmed messages 1..{k} of {total}; send again from message {k + 1}"
    if k < first:
        return f"no rows confirmed of {total}; rerun the same command"
    span = f"{total}" if first == 1 else f"rows {first}..{last}"
    limit = f" --limit {last - k}" if opts.csv.limit is not None else ""
    return f"confirmed rows {first}..{k} of {span}; rerun with --start-row {k + 1}{limit}"


def _tasks(opts: EmitOptions, run_id: str, stats: ReadStats) -> Iterator[Task]:
    if opts.source is None:
        for n, text in enumerate(opts.messages, start=1):
            stats.rows += 1
            stats.selected += 1
            yield Task.from_row(text, n, run_id, "--message")
        return
    with open_source(opts.source) as stream:
        row: Row
        for row in iter_rows(stream, opts.source, opts.csv, stats):
            yield Task.from_row(row.body, row.row, run_id, opts.source)


def _notice(event: str, fields: dict[str, object]) -> str:
    """The line a person should see at once for a publisher event, if any."""
    if event == BLOCKED:
        return (
            f"the broker is blocking publishers ({fields.get('reason')}); waiting up to "
            f"{fields.get('wait_up_to')} for it to recover"
        )
    if event == UNBLOCKED:
        return "the broker accepts publishes again"
    if event == CONNECTION_LOST:
        return (
            f"connection lost ({fields.get('reason')}); reconnecting, "
            f"{_tasks_again(fields.get('unconfirmed'))} will be published again"
        )
    if event == RECONNECTED:
        return f"reconnected to {fields.get('node')}; republishing {fields.get('republishing')}"
    return ""


def _tasks_again(unconfirmed: object) -> str:
    """ "3 unconfirmed tasks" (the count comes from the publisher's event)."""
    if isinstance(unconfirmed, int):
        return plural(unconfirmed, "unconfirmed task")
    return f"{unconfirmed} unconfirmed tasks"


def failure_summary(report: EmitReport) -> TaskToolError:
    """The error for a run that did not get every row confirmed, with where to resume."""
    r = report.result
    resume = report.resume
    if r.unroutable:
        rows = ", ".join(str(t.row) for t in r.unroutable[:10])
        more = " ..." if len(r.unroutable) > 10 else ""
        return BrokerUnavailable(
            f"{plural(len(r.unroutable), 'task')} could not be routed to the queue "
            f"(rows {rows}{more}); "
            f"was the queue deleted mid-run? {resume}",
            "check the queue exists ('tasks status'), then rerun as said",
        )
    if r.nacked:
        rows = ", ".join(str(t.row) for t in r.nacked[:10])
        more = " ..." if len(r.nacked) > 10 else ""
        return BrokerUnavailable(
            f"the broker refused {plural(len(r.nacked), 'task')} (rows {rows}{more}) "
            f"after {MAX_NACK_RETRIES} republishes each; {resume}",
            "a queue length limit (x-max-length with reject-publish) or a broker alarm "
            "refuses messages; make room in the queue, then rerun as said",
        )
    err = r.error or BrokerUnavailable("emit did not finish", "")
    err.message = f"{err.message}; {resume}" if resume else err.message
    if not err.hint:
        err.hint = "start the broker again ('make broker-up'), then rerun as said"
    return err
