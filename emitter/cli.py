"""The `emit` command."""

from __future__ import annotations

import codecs
import itertools
import shlex
import sys
import webbrowser
from urllib.parse import quote, urlsplit

import click

from emitter.emit import EmitOptions, EmitReport, emit_rows, failure_summary
from emitter.publisher import DEFAULT_WINDOW
from emitter.source import CsvOptions, ReadStats, iter_rows, open_source, validate_file
from utils.cli import (
    EnvOption,
    broker_options,
    consumer_timeout_option,
    echo_prose,
    events_options,
    handle_errors,
    make_settings,
    management_url_option,
    open_events,
)
from utils.errors import BadInput, ExitCode
from utils.eventlog.format import BODY_CHARS
from utils.eventlog.log import EventLog
from utils.settings import DEFAULT_QUEUE, mask_url, url_vhost
from utils.text import plural, safe

PREVIEW_ROWS = 5


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", required=False, metavar="[FILE|-]")
@click.option(
    "-m",
    "--message",
    "messages",
    multiple=True,
    metavar="TEXT",
    help="Send this text as a task (repeatable), instead of a file.",
)
@click.option(
    "--header/--no-header",
    default=False,
    show_default=True,
    help="Whether the first line names the columns.",
)
@click.option(
    "--column",
    metavar="NAME|N",
    help="Use one field as the body: a header name or a 1-based number. "
    "Default: all fields joined by a space.",
)
@click.option("--delimiter", default=",", show_default=True, help="Field separator.")
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="Text encoding of the file; a UTF-8 BOM is skipped.",
)
@click.option(
    "--start-row",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="First row to send (rows count from 1, blank lines and header excluded).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Send at most this many rows.")
@click.option(
    "--order",
    type=click.Choice(["file", "longest-first"]),
    default="file",
    show_default=True,
    help="longest-first sends tasks by decreasing number of dots (the LPT rule), "
    "which shortens the run; it reads the whole file into memory.",
)
@click.option(
    "--dry-run", is_flag=True, help="Check the input and show what would be sent; needs no broker."
)
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to keep reconnecting if the broker goes away mid-run.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Most messages awaiting a publisher confirm at once.",
)
@click.option(
    "--blocked-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds to wait while the broker blocks publishers (a memory or disk alarm) "
    "before giving up.",
)
@click.option(
    "--fast-path/--no-fast-path",
    envvar="EMIT_FAST_PATH",
    cls=EnvOption,
    default=True,
    show_default=True,
    help="Write pre-built frames on pika's private write path, for about half the CPU "
    "(EMIT_FAST_PATH=0 turns it off: pika's public API only). It steps aside by itself "
    "on a pika version it was not tested with; see docs/EMIT.md.",
)
@click.option(
    "--open-admin",
    is_flag=True,
    help="Afterwards, open the queue's page in the RabbitMQ management UI in a browser "
    "(its port is the AMQP port + 10000: 15672 for 5672).",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress bar and no notes; errors, warnings and the summary still print.",
)
@events_options
@broker_options
@consumer_timeout_option
@management_url_option
@handle_errors
def main(
    source,
    messages,
    header,
    column,
    delimiter,
    encoding,
    start_row,
    limit,
    order,
    dry_run,
    retry_for,
    window,
    blocked_timeout,
    fast_path,
    open_admin,
    quiet,
    urls,
    queue,
    queue_type,
    log_dir,
):
    """Publish every row of a CSV file as a persistent task on the work queue.

    Each row becomes one message, its fields joined by a space; every message is
    confirmed by the broker before it counts as sent. The whole file is checked first:
    if any row is bad, nothing is sent.

    \b
    Examples:
      emit tasks.csv
      emit --message "Hello..." --message "World."
      cat tasks.csv | emit -
      emit big.csv --header --column body --start-row 5001
    """
    check_inputs(source, messages, delimiter, encoding)
    csv_opts = CsvOptions(header, column, delimiter, encoding, start_row, limit)
    opts = EmitOptions(
        source, tuple(messages), csv_opts, order, window, retry_for, blocked_timeout, fast_path
    )
    settings = make_settings(urls, queue, queue_type, log_dir)

    if dry_run:
        _dry_run(opts)
        return

    log = EventLog(log_dir / "emitter.log", echo=False)
    stream = open_events(settings, "emit", log)
    bar = None

    def on_start(total: int | None) -> None:
        nonlocal bar
        if total and not quiet and sys.stderr.isatty():
            bar = click.progressbar(
                length=total,
                label="confirmed",
                show_eta=True,
                show_percent=True,
                show_pos=True,
                file=sys.stderr,
            )
            bar.__enter__()

    def on_confirm(n: int) -> None:
        if bar is not None:
            bar.update(n)

    def on_notice(text: str) -> None:
        if not quiet:
            if bar is not None:
                click.echo("", err=True)  # leave the bar's line alone
            echo_prose(f"note: {text}", err=True)

    try:
        report = emit_rows(
            settings,
            opts,
            log=log,
            on_start=on_start,
            on_confirm=on_confirm,
            on_notice=on_notice,
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        if stream is not None:
            stream.close()  # the run's events, its manifest included
            if stream.off_reason and not quiet:
                echo_prose(f"note: events not sent to the broker: {stream.off_reason}", err=True)
    if open_admin:
        _open_admin(report.result.url or settings.url, queue)
    say_outcome(report, queue, quiet)


def check_inputs(
    source: str | None, messages: tuple[str, ...], delimiter: str, encoding: str
) -> None:
    """The options' own errors, before anything is read or sent."""
    if source is None and not messages:
        raise BadInput(
            "nothing to send", "give a CSV file (emit tasks.csv), '-' for stdin, or --message TEXT"
        )
    if source is not None and messages:
        raise BadInput("give a file or --message, not both", "")
    if len(delimiter) != 1:
        raise BadInput(
            f"--delimiter must be one character, not '{delimiter}'",
            "for a tab, use --delimiter $'\\t'",
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise BadInput(f"unknown --encoding '{encoding}'", "try utf-8, latin-1 or cp1252") from None


def say_outcome(report: EmitReport, queue: str, quiet: bool) -> None:
    """The summary line on stdout, the queue's notes and warnings on stderr; a run that lost a
    row raises its failure summary instead."""
    r = report.result
    if r.error or r.unroutable or r.nacked:
        raise failure_summary(report)
    echo_prose(summary_line(report, queue))
    if report.queue_note and not quiet:
        echo_prose(f"note: {report.queue_note}", err=True)
    for line in queue_warnings(report, queue, quiet):
        echo_prose(line, err=True)


def summary_line(report: EmitReport, queue: str) -> str:
    """One line with everything a finished run did."""
    r = report.result
    rate = r.confirmed / r.seconds if r.seconds > 0 else 0.0
    return (
        f"published {plural(r.confirmed, 'task')} to queue {queue} at {mask_url(r.url)} in "
        f"{r.seconds:.2f} s (all confirmed): {r.published} published, {r.confirmed} confirmed, "
        f"{r.republished} republished, {plural(report.stats.blank, 'blank line')} skipped, "
        f"{rate:,.0f} tasks/s; run {report.run_id}"
    )


def queue_warnings(report: EmitReport, queue: str, quiet: bool) -> list[str]:
    """What the queue looked like before publishing, when it may surprise: lines for stderr.

    Tasks already waiting are a warning, which --quiet does not hide: emit run twice by
    mistake sends every task twice. No worker listening yet is a note, which it does.
    """
    lines = []
    named = "" if queue == DEFAULT_QUEUE else f" --queue {shlex.quote(queue)}"
    n = report.waiting_before
    if n:
        were = "was" if n == 1 else "were"
        lines += [
            f"warning: {plural(n, 'task')} from before this run {were} already waiting in "
            f"queue {queue}",
            f"  hint: if emit ran twice by mistake, every task is there twice: 'tasks purge{named}'"
            " empties the queue, then emit once; 'tasks status' shows it",
        ]
    if not report.consumers and not quiet:
        lines += [
            f"note: no worker is listening on queue {queue} yet; the tasks wait there for one",
            f"  hint: start a worker in another terminal: work{named}",
        ]
    return lines


def admin_url(url: str, queue: str) -> str:
    """The management UI page of the queue on the broker that url names."""
    parts = urlsplit(url)
    port = (parts.port or 5672) + 10000
    scheme = "https" if parts.scheme == "amqps" else "http"
    vhost = quote(url_vhost(url), safe="")
    return f"{scheme}://{parts.hostname}:{port}/#/queues/{vhost}/{quote(queue, safe='')}"


def _open_admin(url: str, queue: str) -> None:
    """Open the queue's page in a browser (webbrowser honours $BROWSER); never ask anything."""
    page = admin_url(url, queue)
    try:
        opened = webbrowser.open(page)
    except webbrowser.Error:
        opened = False
    if opened:
        click.echo(f"opened {page}", err=True)
    else:
        echo_prose(f"note: no browser to open; the queue's page is {page}", err=True)


def _dry_run(opts: EmitOptions) -> None:
    """Check the input, show the first messages, print the total; no broker involved."""
    if opts.source is None:
        bodies = list(opts.messages)
        for n, body in enumerate(bodies[:PREVIEW_ROWS], start=1):
            click.echo(f"row {n}: {safe(body, BODY_CHARS)}")
        click.echo(f"dry run: {plural(len(bodies), 'task')} would be sent; nothing was published")
        return
    if opts.source != "-":
        stats = validate_file(opts.source, opts.csv)
    stats = ReadStats()
    with open_source(opts.source) as stream:
        rows = iter_rows(stream, opts.source, opts.csv, stats)
        for row in itertools.islice(rows, PREVIEW_ROWS):
            click.echo(
                f"row {row.row} (line {row.line}): {safe(row.body, BODY_CHARS)}  "
                f"[{plural(row.body.count('.'), 'dot')}]"
            )
        for _ in rows:
            pass
    blank = f", {plural(stats.blank, 'blank line')} skipped" if stats.blank else ""
    sent = plural(stats.selected, "task")
    click.echo(f"dry run: {sent} would be sent{blank}; nothing was published")
    if stats.selected == 0:
        sys.exit(int(ExitCode.NOTHING_DONE))
