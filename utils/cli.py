"""What every command shares at its edge: the broker options and the error handling."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from utils.errors import ExitCode, TaskToolError
from utils.eventlog.log import EventLog
from utils.eventlog.stream import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_BYTES,
    EventsConfig,
    EventStream,
    check_max_age,
    open_event_stream,
    parse_size,
)
from utils.rabbitmq import quiet_pika
from utils.settings import (
    DEFAULT_QUEUE,
    DEFAULT_URL,
    QUEUE_TYPES,
    Settings,
    TlsFiles,
    mask_url,
    split_urls,
)
from utils.text import prose, safe_lines

F = TypeVar("F", bound=Callable[..., Any])


class EnvOption(click.Option):
    """An option whose --help names its environment variable, and says so when it is set.

    click shows `[default: ...]` even when the variable overrides it; a person who set
    AMQP_URL long ago would read the wrong broker there. So a set variable is shown with
    its value (passwords masked) as the one in effect.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("show_envvar", True)
        super().__init__(*args, **kwargs)

    def get_help_extra(self, ctx: click.Context) -> Any:
        """click's extras, with the variable's value when it is set (and so wins)."""
        extra = super().get_help_extra(ctx)
        names = [self.envvar] if isinstance(self.envvar, str) else list(self.envvar or ())
        for name in names:
            value = os.environ.get(name)
            if value:  # click, too, ignores a variable set to ""
                extra["envvars"] = (f"{name}={_masked(value)}, in effect",)
                break
        return extra


def _masked(value: str) -> str:
    """Each URL in a list of them with its password masked."""
    return "".join(mask_url(part) for part in re.split(r"([,\s]+)", value))


def _urls(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return split_urls(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _remember_tls(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    # Kept out of the commands' signatures: make_settings picks them up from the context.
    if value is not None and param.name:
        ctx.meta.setdefault("tls", {})[param.name] = value


def broker_options(f: F) -> F:
    """--url, --queue, --queue-type and --log-dir, each with its environment variable."""
    options = [
        click.option(
            "--url",
            "urls",
            multiple=True,
            envvar="AMQP_URL",
            cls=EnvOption,
            default=(DEFAULT_URL,),
            show_default=True,
            callback=_urls,
            help="Broker URL. Repeat it, or separate URLs with commas, "
            "to name the nodes of a cluster.",
        ),
        click.option(
            "--queue",
            envvar="TASK_QUEUE",
            cls=EnvOption,
            default=DEFAULT_QUEUE,
            show_default=True,
            help="The work queue; the RabbitMQ tutorial's name by default.",
        ),
        click.option(
            "--queue-type",
            envvar="TASK_QUEUE_TYPE",
            cls=EnvOption,
            type=click.Choice(QUEUE_TYPES),
            default="quorum",
            show_default=True,
            help="Type of a queue we create. An existing queue is used as it is.",
        ),
        click.option(
            "--log-dir",
            envvar="TASK_LOG_DIR",
            cls=EnvOption,
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("logs"),
            show_default=True,
            help="Where log files go.",
        ),
        *[
            click.option(
                f"--{name}",
                envvar=f"TASK_{name.upper().replace('-', '_')}",
                cls=EnvOption,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                expose_value=False,
                callback=_remember_tls,
                help=text,
            )
            for name, text in (
                (
                    "ca-cert",
                    "PEM file of the CA that signed the broker's certificate, for amqps:// URLs.",
                ),
                ("client-cert", "PEM client certificate, if the broker asks for one."),
                ("client-key", "PEM key of the client certificate."),
            )
        ],
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    # Kept out of the commands' signatures, as the TLS files are: make_settings reads them.
    if value is not None and param.name:
        ctx.meta.setdefault("queue_options", {})[param.name] = value


def consumer_timeout_option(f: F) -> F:
    """--consumer-timeout: how long a worker may hold a task (docs/WORKER.md, by version)."""
    return click.option(
        "--consumer-timeout",
        envvar="TASK_CONSUMER_TIMEOUT",
        type=click.FloatRange(min=1),
        metavar="SECONDS",
        expose_value=False,
        callback=_remember,
        help="How long the broker lets a worker hold a task unacknowledged (env "
        "TASK_CONSUMER_TIMEOUT): on RabbitMQ 4.3 the worker's own consumer asks for it, on "
        "any quorum queue; on 3.12 to 4.2 a queue this command creates gets it. Raise it "
        "for tasks longer than the broker's consumer_timeout (30 minutes by default).",
    )(f)


def management_url_option(f: F) -> F:
    """--management-url: where the management API is, for what AMQP cannot tell."""
    return click.option(
        "--management-url",
        envvar="TASK_MANAGEMENT_URL",
        cls=EnvOption,
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help="The management API, for what AMQP cannot tell: the policy in force, rates, "
        "consumers. [default: http://HOST:(AMQP port + 10000)/ with the AMQP URL's user and password]",
    )(f)


def _trust(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    names = tuple(n.strip() for v in value for n in v.split(",") if n.strip())
    ctx.meta["trust_users"] = names


def trust_option(f: F) -> F:
    """--trust-user: whose events on the stream count, beside the reader's own login."""
    return click.option(
        "--trust-user",
        "trust_users",
        multiple=True,
        envvar="TASK_TRUST_USERS",
        metavar="USER",
        expose_value=False,
        callback=_trust,
        help="Count the stream's events published by this broker user too (repeatable; env "
        "TASK_TRUST_USERS, comma-separated). By default only the events of the user this "
        "command logs in as count; others are set aside and named (docs/REPORT.md).",
    )(f)


def make_settings(
    urls: tuple[str, ...], queue: str, queue_type: str, log_dir: Path, heartbeat: int | None = None
) -> Settings:
    ctx = click.get_current_context(silent=True)
    tls = TlsFiles(**(ctx.meta.get("tls", {}) if ctx else {}))
    extra = ctx.meta.get("queue_options", {}) if ctx else {}
    return Settings(
        urls=urls,
        queue=queue,
        queue_type=queue_type,
        heartbeat=heartbeat,
        log_dir=log_dir,
        tls=tls,
        consumer_timeout=extra.get("consumer_timeout"),
        management_url=extra.get("management_url"),
        trust_users=ctx.meta.get("trust_users", ()) if ctx else (),
    )


def echo_prose(text: str, err: bool = False) -> None:
    """click.echo(text) to stdout (stderr with err), its lines wrapped at words on a terminal."""
    click.echo(prose(text, sys.stderr if err else sys.stdout), err=err)


def echo_safe(text: str, err: bool = False, nl: bool = True) -> None:
    """click.echo(safe_lines(text)): for lines that quote text from a task or the broker."""
    click.echo(safe_lines(text), err=err, nl=nl)


def fail(message: str, hint: str = "", code: int = ExitCode.BAD_INPUT) -> None:
    """Print our two-line error and exit with code."""
    echo_prose(f"error: {message}", err=True)
    if hint:
        echo_prose(f"  hint: {hint}", err=True)
    sys.exit(int(code))


def handle_errors(f: F) -> F:
    """Run a command body, turning our known failures into one line, a hint and an exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        quiet_pika()
        try:
            return f(*args, **kwargs)
        except TaskToolError as exc:
            fail(exc.message, exc.hint, exc.exit_code)
        except KeyboardInterrupt:
            if sys.stderr.isatty():
                click.echo("", err=True)  # the TTY echoed ^C where our line would start
            fail("interrupted", "", ExitCode.COLD_STOP)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("TASKS_DEBUG"):
                traceback.print_exc()
            fail(
                f"unexpected {type(exc).__name__}: {exc}",
                "this is a bug in multiple-consumers; rerun with TASKS_DEBUG=1 for the "
                "traceback and report it",
                1,
            )

    return wrapper  # type: ignore[return-value]


def _kept_for_events(check: Callable[[Any], Any]) -> Callable[..., None]:
    """A callback that checks an events option and keeps it for open_events(), out of the
    command's signature (as the TLS files are)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        try:
            ctx.meta.setdefault("events", {})[param.name] = check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def events_options(f: F) -> F:
    """--events/--no-events and the retention of the stream, each with its environment variable."""
    options = [
        click.option(
            "--events/--no-events",
            "events",
            envvar="TASK_EVENTS",
            default=True,
            show_default=True,
            expose_value=False,
            callback=_kept_for_events(bool),
            help="Also send every logged event to the stream <queue>.events on the broker, "
            "so that 'tasks report --source broker' sees it from anywhere (env TASK_EVENTS; "
            "0 turns it off). The local log is written either way.",
        ),
        click.option(
            "--events-max-age",
            envvar="TASK_EVENTS_MAX_AGE",
            default=DEFAULT_MAX_AGE,
            show_default=True,
            expose_value=False,
            callback=_kept_for_events(check_max_age),
            metavar="AGE",
            help="Events older than this are dropped from a stream we create: 7D, 12h, 30m, "
            "1Y ... (env TASK_EVENTS_MAX_AGE). An existing stream is used as it is.",
        ),
        click.option(
            "--events-max-bytes",
            envvar="TASK_EVENTS_MAX_BYTES",
            default="1GB",
            show_default=True,
            expose_value=False,
            callback=_kept_for_events(lambda v: v if isinstance(v, int) else parse_size(v)),
            metavar="SIZE",
            help="The oldest events are dropped from a stream we create beyond this size: "
            "500MB, 1GB ... (env TASK_EVENTS_MAX_BYTES).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def open_events(settings: Settings, source: str, log: EventLog) -> EventStream | None:
    """The command's event stream, as its --events options say, attached to its log (None
    with --no-events)."""
    kept = click.get_current_context().meta.get("events", {})
    config = EventsConfig(
        enabled=kept.get("events", True),
        max_age=kept.get("events_max_age", DEFAULT_MAX_AGE),
        max_bytes=kept.get("events_max_bytes", DEFAULT_MAX_BYTES),
    )
    return open_event_stream(settings, config, source, log)
