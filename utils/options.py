"""What every command shares at its edge: the broker options and the error handling."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from utils.broker import quiet_pika
from utils.errors import ExitCode, TaskToolError
from utils.settings import (
    DEFAULT_QUEUE,
    DEFAULT_URL,
    QUEUE_TYPES,
    Settings,
    TlsFiles,
    split_urls,
)

F = TypeVar("F", bound=Callable[..., Any])


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
            default=(DEFAULT_URL,),
            show_default=True,
            callback=_urls,
            help="Broker URL (env AMQP_URL). Repeat it, or separate URLs with commas, "
            "to name the nodes of a cluster.",
        ),
        click.option(
            "--queue",
            envvar="TASK_QUEUE",
            default=DEFAULT_QUEUE,
            show_default=True,
            help="The work queue (env TASK_QUEUE); the RabbitMQ tutorial's name by default.",
        ),
        click.option(
            "--queue-type",
            envvar="TASK_QUEUE_TYPE",
            type=click.Choice(QUEUE_TYPES),
            default="quorum",
            show_default=True,
            help="Type of a queue we create (env TASK_QUEUE_TYPE). An existing queue is used "
            "as it is.",
        ),
        click.option(
            "--log-dir",
            envvar="TASK_LOG_DIR",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("logs"),
            show_default=True,
            help="Where log files go (env TASK_LOG_DIR).",
        ),
        *[
            click.option(
                f"--{name}",
                envvar=f"TASK_{name.upper().replace('-', '_')}",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                expose_value=False,
                callback=_remember_tls,
                help=text,
            )
            for name, text in (
                (
                    "ca-cert",
                    "PEM file of the CA that signed the broker's certificate, for "
                    "amqps:// URLs (env TASK_CA_CERT).",
                ),
                (
                    "client-cert",
                    "PEM client certificate, if the broker asks for one (env TASK_CLIENT_CERT).",
                ),
                ("client-key", "PEM key of the client certificate (env TASK_CLIENT_KEY)."),
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
    """--consumer-timeout: the x-consumer-timeout of a queue this command creates."""
    return click.option(
        "--consumer-timeout",
        envvar="TASK_CONSUMER_TIMEOUT",
        type=click.FloatRange(min=1),
        metavar="SECONDS",
        expose_value=False,
        callback=_remember,
        help="How long the broker lets a worker hold a task unacknowledged, for a queue this "
        "command creates (env TASK_CONSUMER_TIMEOUT; RabbitMQ 3.12 and later). Raise it "
        "for tasks longer than the broker's consumer_timeout (30 minutes by default).",
    )(f)


def management_url_option(f: F) -> F:
    """--management-url: where the management API is, for what AMQP cannot tell."""
    return click.option(
        "--management-url",
        envvar="TASK_MANAGEMENT_URL",
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help="The management API, to check the queue's policy (env TASK_MANAGEMENT_URL). "
        "[default: http://HOST:(AMQP port + 10000)/ with the AMQP URL's user and password]",
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
    )


def fail(message: str, hint: str = "", code: int = ExitCode.BAD_INPUT) -> None:
    """Print our two-line error and exit with code."""
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)
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
