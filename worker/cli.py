"""The `work` command: one process is one worker."""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import socket
import sys
from pathlib import Path

import click

from utils.cli import (
    EnvOption,
    broker_options,
    consumer_timeout_option,
    events_options,
    handle_errors,
    make_settings,
    management_url_option,
    open_events,
)
from utils.errors import ExitCode, TaskToolError
from utils.eventlog.log import EventLog
from utils.eventlog.schema import WORKER_STOPPED
from utils.eventlog.stream import parse_size
from worker.handlers import DotSleep, Handler, RunCommand
from worker.loop import Worker, WorkerOptions
from worker.results import ResultsStore
from worker.terminal import Terminal


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def log_path(log_dir: Path, name: str) -> Path:
    """logs/worker-<name>.log, with the name made safe for a file name."""
    return log_dir / f"worker-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.log"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--name", default=None, help="Worker name in logs and reports. [default: HOST-PID]")
@click.option(
    "--seconds-per-dot",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    envvar="SECONDS_PER_DOT",
    cls=EnvOption,
    help="The simulated task sleeps this long for every '.' in its body.",
)
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Run CMD for each task instead of sleeping: the body comes on stdin and in "
    "TASK_BODY (also TASK_ID, TASK_ROW, TASK_ATTEMPT; our settings and secrets are left out "
    "of its environment); exit 0 means done.",
)
@click.option(
    "--shell",
    is_flag=True,
    help="Run --exec through /bin/sh (only then do quotes, pipes and ; mean anything).",
)
@click.option(
    "--max-output",
    metavar="SIZE",
    callback=lambda ctx, param, v: None if v is None else _size(v),
    help="Keep at most SIZE bytes of each of a command's stdout and stderr (e.g. 10MB); "
    "the rest is read and dropped, and its record says truncated. [default: keep everything]",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Unacked tasks the broker may hand this worker at once. 1 is fair dispatch; "
    "more trades fairness for throughput on very short tasks.",
)
@click.option("--max-tasks", type=click.IntRange(min=1), help="Exit after this many tasks.")
@click.option(
    "--exit-when-idle",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit once no task has come for this many seconds.",
)
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="A task running longer than this fails (and is retried).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Attempts before a failing task goes to the dead-letter queue <queue>.dead.",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=0),
    metavar="SECONDS",
    help="AMQP heartbeat to ask for. [default: the broker's, 60 s]",
)
@click.option(
    "--fast-ack/--no-fast-ack",
    envvar="WORK_FAST_ACK",
    default=True,
    show_default=True,
    help="Write each ack to the socket directly, below pika's public API, for about 35 us "
    "less CPU a task (env WORK_FAST_ACK; 0 turns it off: pika's basic_ack only). It steps "
    "aside by itself on TLS and on a pika version it was not tested with; see docs/WORKER.md.",
)
@click.option("-q", "--quiet", is_flag=True, help="Write events to the log file only.")
@events_options
@broker_options
@consumer_timeout_option
@management_url_option
@handle_errors
def main(
    name,
    seconds_per_dot,
    command,
    shell,
    max_output,
    prefetch,
    max_tasks,
    exit_when_idle,
    task_timeout,
    max_attempts,
    heartbeat,
    fast_ack,
    quiet,
    urls,
    queue,
    queue_type,
    log_dir,
):
    """Take tasks from the work queue one at a time and do them, until stopped.

    Start as many as you like, in other terminals or on other machines: the broker
    hands each worker one task at a time (fair dispatch), and a task is acknowledged
    only after it is done, so a worker that dies loses nothing.

    Ctrl+C (or SIGTERM) once: finish the current task, then exit. Twice: give the task
    back to the queue and exit at once.
    """
    name = name or default_name()
    settings = make_settings(urls, queue, queue_type, log_dir, heartbeat)
    results = ResultsStore(log_dir, max_output)
    handler: Handler = RunCommand(command, shell, results) if command else DotSleep(seconds_per_dot)
    if shell and not command:
        raise click.BadParameter("--shell only goes with --exec", param_hint="--shell")
    if max_output is not None and not command:
        raise click.BadParameter("--max-output only goes with --exec", param_hint="--max-output")
    opts = WorkerOptions(
        name=name,
        prefetch=prefetch,
        max_tasks=max_tasks,
        exit_when_idle=exit_when_idle,
        heartbeat=heartbeat,
        task_timeout=task_timeout,
        max_attempts=max_attempts,
        fast_ack=fast_ack,
    )
    path = log_path(log_dir, name)
    terminal = Terminal.for_stream(sys.stderr, path)
    log = EventLog(path, echo=not quiet, terminal=terminal)
    stream = open_events(settings, f"work-{name}", log)
    worker = Worker(settings, opts, handler, log)

    def on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            terminal.interrupted()  # the TTY echoed ^C where the next line would start
        worker.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # As Celery's workers do: `kill -USR1 PID` prints where every thread is, to stderr.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if terminal.is_tty and hasattr(signal, "SIGWINCH"):
        signal.signal(signal.SIGWINCH, lambda signum, frame: terminal.resized())
    tally = worker.tally
    try:
        worker.run()
    except TaskToolError as exc:
        # Say in the log why the worker stopped; the command prints the error and hint.
        tally.stop = f"error: {exc.message}"
        raise
    finally:
        log.event(
            WORKER_STOPPED,
            worker=name,
            done=tally.done,
            failed=tally.failed,
            dead_lettered=tally.dead_lettered,
            redelivered=tally.redelivered,
            busy=tally.busy,
            stop=tally.stop,
        )
        if stream is not None:
            stream.close()  # its last events, worker_stopped included
    click.echo(terminal.text(tally.line(name)), err=True)
    if worker.stop_stage == 2:
        raise SystemExit(int(ExitCode.COLD_STOP))
