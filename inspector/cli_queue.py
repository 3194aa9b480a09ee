"""`tasks status` and `tasks purge`: looking at the queue itself, and emptying it."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import click

from inspector.status import gather, render
from utils import rabbitmq
from utils.cli import (
    broker_options,
    echo_prose,
    echo_safe,
    handle_errors,
    make_settings,
    management_url_option,
)
from utils.errors import ExitCode, NothingToDo, TaskToolError
from utils.settings import Settings, url_host
from utils.text import plural

#: Seconds between refreshes of `tasks status --watch`.
WATCH_EVERY = 1.0


@click.command()
@broker_options
@management_url_option
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl+C.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@handle_errors
def status(
    urls: tuple[str, ...],
    queue: str,
    queue_type: str,
    log_dir: Path,
    watch: bool,
    as_json: bool,
) -> None:
    """The queue right now: ready and unacked messages, consumers, type, dead letters, rates.

    Counts come from the broker over AMQP. The unacked count and the publish/deliver
    rates come from the management API when it answers; when it does not, status says
    so and shows the rest. A quorum queue with no dead-letter target gets a warning, with
    the command (a policy) that gives it one.
    """
    settings = make_settings(urls, queue, queue_type, log_dir)
    if not watch:
        _show(settings, as_json)
        return
    try:
        while True:
            if not as_json:
                click.clear()
                click.echo(f"{datetime.now():%H:%M:%S}  (Ctrl+C to stop)")
            try:
                _show(settings, as_json)
            except TaskToolError as exc:  # the broker may come back; keep watching
                echo_prose(f"error: {exc.message}", err=True)
            time.sleep(WATCH_EVERY)
    except KeyboardInterrupt:
        return


def _show(settings: Settings, as_json: bool) -> None:
    s = gather(settings, settings.management_url)
    if as_json:
        # One object per line, so that --watch --json is a stream a script can read.
        click.echo(json.dumps(s.to_json()))
    else:
        echo_safe("\n".join(render(s)))


@click.command()
@broker_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dead", is_flag=True, help="Empty the dead-letter queue (<queue>.dead) instead.")
@handle_errors
def purge(
    urls: tuple[str, ...], queue: str, queue_type: str, log_dir: Path, yes: bool, dead: bool
) -> None:
    """Remove every ready message from the queue (asks first, unless --yes).

    Messages that workers hold unacked are not touched; if a worker gives one back, it
    lands in the queue again.
    """
    settings = make_settings(urls, queue, queue_type, log_dir)
    name = rabbitmq.dead_letter_name(queue) if dead else queue
    conn, url = rabbitmq.connect(settings, client_name="tasks purge")
    try:
        counts = rabbitmq.queue_counts(conn, name)
        if counts is None:
            raise NothingToDo(
                f"queue '{name}' does not exist at {url_host(url)}: nothing to remove",
                "check --queue / TASK_QUEUE and --url / AMQP_URL",
            )
        ready, consumers = counts
        if not yes:
            attached = plural(consumers, "consumer")
            held = f" ({attached} attached; what they hold stays)" if consumers else ""
            question = (
                f"Remove all {plural(ready, 'ready message')} from queue '{name}' at "
                f"{url_host(url)}{held}?"
            )
            if not click.confirm(question, default=False):
                click.echo("nothing removed")
                raise SystemExit(int(ExitCode.NOTHING_DONE))
        removed = rabbitmq.purge_queue(conn, name)
    finally:
        conn.close()
    click.echo(f"removed {plural(removed, 'message')} from queue '{name}'")
