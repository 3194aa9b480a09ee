"""`tasks dead`: list the dead-letter queue, or send its messages back to the work queue."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from utils import rabbitmq
from utils.cli import (
    broker_options,
    consumer_timeout_option,
    handle_errors,
    make_settings,
    management_url_option,
)
from utils.errors import ConnectionLost, PublishRefused
from utils.eventlog.format import BODY_CHARS
from utils.task import ATTEMPT_HEADERS, delivery_ids, failure_reason
from utils.text import plural, safe


@click.command()
@click.option(
    "--requeue",
    is_flag=True,
    help="Move every dead letter back to the work queue, its attempt count reset.",
)
@broker_options
@consumer_timeout_option
@management_url_option
@handle_errors
def dead(requeue: bool, urls: tuple[str, ...], queue: str, queue_type: str, log_dir: Path) -> None:
    """List the tasks that failed for good (in <queue>.dead), or retry them with --requeue.

    Listing takes nothing away: the messages are read unacknowledged and given back. With
    --requeue each one is published to the work queue, confirmed by the broker, and only
    then removed from the dead-letter queue, so a crash half-way loses nothing.
    """
    settings = make_settings(urls, queue, queue_type, log_dir)
    dead_queue = rabbitmq.dead_letter_name(queue)
    conn, url = rabbitmq.connect(settings, client_name="tasks dead")
    try:
        _dead(conn, settings, dead_queue, requeue, url)
    except (ConnectionLost, PublishRefused) as exc:
        raise ConnectionLost(
            f"lost the broker while reading {dead_queue}: {exc.message}",
            "nothing was lost: messages not yet moved are still in the dead-letter queue; "
            "run the command again",
        ) from None
    finally:
        conn.close()


def _dead(conn: Any, settings: Any, dead_queue: str, requeue: bool, url: str) -> None:
    counts = rabbitmq.queue_counts(conn, dead_queue)
    if counts is None:
        click.echo(f"no dead letters: {dead_queue} does not exist")
        return
    # Take at most the messages there now, all unacked: none comes round twice, and any
    # we do not settle go back to the queue when the channel closes.
    channel = rabbitmq.open_channel(conn)
    got = []
    for _ in range(counts[0]):
        delivery = channel.get(dead_queue)
        if delivery is None:
            break
        got.append(delivery)
    if not got:
        click.echo(f"no dead letters in {dead_queue}")
        return
    if not requeue:
        click.echo(f"{plural(len(got), 'dead letter')} in {dead_queue}:")
        for _method, props, body in got:
            click.echo(_describe(props, body))
        channel.give_back_all()
        click.echo(f"(left in place; 'tasks dead --requeue' sends them back to {settings.queue})")
        return
    rabbitmq.declare_for_publishing(conn, settings, url)
    for method, props, body in got:
        headers = {k: v for k, v in (props.headers or {}).items() if k not in ATTEMPT_HEADERS}
        rabbitmq.publish_copy(conn, settings.queue, body, props, headers)
        channel.ack(method.delivery_tag)  # only once the copy is confirmed
        click.echo("requeued " + _describe(props, body))
    click.echo(f"moved {plural(len(got), 'dead letter')} back to {settings.queue}")


def _describe(props: Any, body: bytes) -> str:
    """One line for a dead letter: row, task id, reason and the start of its body."""
    tid, row, _run = delivery_ids(props, body)
    shown_id = safe(tid) if props.message_id else "- (no message id: another tool published it)"
    # Every part may come from whoever published the message: shown escaped (utils/text.py).
    reason = safe(failure_reason(props.headers or {}))
    shown_row = "-" if row is None else safe(str(row))
    return f"  row {shown_row}  task {shown_id}  reason: {reason}  body: {_readable(body)}"


#: A byte that is not UTF-8, as decode(..., "surrogateescape") holds it.
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def _readable(body: bytes) -> str:
    """The start of a body in quotes, made safe (utils/text.py's safe()), bytes that are not
    text shown as \\xff: '\\xff\\xfe ..'."""
    shown = safe(body.decode("utf-8", "surrogateescape"), BODY_CHARS)
    return "'" + _BAD_BYTE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}", shown) + "'"
