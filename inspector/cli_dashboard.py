"""`tasks dashboard`: the run live in a browser, with /metrics for Prometheus."""

from __future__ import annotations

import secrets
import signal
import threading
from pathlib import Path

import click

from inspector.dashboard.server import (
    IDLE_TIMEOUT,
    Dashboard,
    QueueWatch,
    is_loopback,
    make_server,
    page_url,
)
from inspector.dashboard.sources import LogTail
from inspector.dashboard.state import DashboardState
from utils.cli import (
    EnvOption,
    broker_options,
    handle_errors,
    make_settings,
    management_url_option,
)
from utils.errors import BadInput


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    envvar="TASK_DASHBOARD_PORT",
    cls=EnvOption,
    help="Port to serve on; 0 picks a free one.",
)
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    envvar="TASK_DASHBOARD_BIND",
    cls=EnvOption,
    help="Address to listen on. Any address but loopback needs --token.",
)
@click.option(
    "--token",
    "use_token",
    is_flag=True,
    envvar="TASK_DASHBOARD_TOKEN",
    cls=EnvOption,
    help="Require a token, made now and printed once in the URL (or set the variable to 1).",
)
@click.option(
    "--run",
    "run_id",
    metavar="ID",
    envvar="TASK_DASHBOARD_RUN",
    cls=EnvOption,
    help="Show this run. [default: follow the latest one]",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    default=IDLE_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    envvar="TASK_DASHBOARD_IDLE_TIMEOUT",
    cls=EnvOption,
    help="Close a connection silent this long (no request, or one left unfinished).",
)
@management_url_option
@broker_options
@handle_errors
def dashboard(
    port: int,
    bind: str,
    use_token: bool,
    run_id: str | None,
    idle_timeout: float,
    urls: tuple[str, ...],
    queue: str,
    queue_type: str,
    log_dir: Path,
) -> None:
    """Watch the run live in a browser: progress, workers, timeline, queue and failures.

    Serves a page (and /api/state as JSON, /metrics for Prometheus) and prints its URL.
    Events come from the log folder (--log-dir), read as they are written; the queue's
    counts from the broker, every 2 s. Ctrl+C stops it.

    It listens on 127.0.0.1 only. To open it from another machine, give --bind 0.0.0.0
    (or an address of this machine) with --token: every request must then carry the
    token, which is printed once, in the URL.
    """
    if not is_loopback(bind) and not use_token:
        raise BadInput(
            f"--bind {bind} would show the dashboard to anyone who can reach this machine",
            "add --token (a token is made and printed once, in the URL), or keep the "
            "default --bind 127.0.0.1",
        )
    settings = make_settings(urls, queue, queue_type, log_dir)
    token = secrets.token_urlsafe(24) if use_token else None
    state = DashboardState(queue=queue, pinned_run=run_id)
    app = Dashboard(
        LogTail(log_dir),
        state,
        QueueWatch(settings),
        token=token,
        bind=bind,
        idle_timeout=idle_timeout,
    )
    server = make_server(app, bind, port)
    port = server.server_address[1]
    app.start()
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
    )
    serving.start()
    click.echo(f"dashboard: {page_url(bind, port, token)}  (Ctrl+C to stop)")
    run_text = f"run {run_id}" if run_id else "the latest run"
    click.echo(
        f"dashboard: showing {run_text} from {log_dir}/, queue '{queue}' at "
        f"{settings.masked_urls}; /metrics for Prometheus",
        err=True,
    )
    if not log_dir.is_dir():
        click.echo(
            f"dashboard: no folder {log_dir}/ yet; waiting for the first log lines", err=True
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        app.stop()
    click.echo("dashboard: stopped", err=True)
