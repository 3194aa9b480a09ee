"""`tasks report` and `tasks wait`: reading the logs back."""

from __future__ import annotations

import time
from pathlib import Path

import click

from utils.cli_common import handle_errors
from utils.errors import ExitCode, NothingToDo
from utils.report import latest_run, read_logs, render_text, summarise

LOG_DIR = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.argument("log_dir", type=LOG_DIR, default=Path("logs"), envvar="TASK_LOG_DIR")
@click.option("--run", "run_id", metavar="ID", help="Report on this run. [default: the latest]")
@handle_errors
def report(log_dir: Path, run_id: str | None) -> None:
    """Which worker did which task of a run, and whether any task was lost or run twice.

    Reads LOG_DIR (default logs/): the emitter's log and every worker's. Exits 1 when a
    task of the run was never done.
    """
    logs = read_logs(log_dir)
    run = logs.runs.get(run_id) if run_id else latest_run(logs)
    if run is None:
        where = f"run {run_id}" if run_id else "any run"
        raise NothingToDo(
            f"no log lines about {where} in {log_dir}/",
            "run 'emit' and some 'work' first, or name the right folder",
        )
    summary = summarise(run)
    click.echo(render_text(run, summary))
    for s in logs.skipped[:10]:
        click.echo(f"skipped {s.file}:{s.line}: {s.why}", err=True)
    if len(logs.skipped) > 10:
        click.echo(f"skipped {len(logs.skipped) - 10} more lines", err=True)
    if summary.audit.missing:
        raise SystemExit(int(ExitCode.NOTHING_DONE))


@click.command()
@click.argument("log_dir", type=LOG_DIR, default=Path("logs"), envvar="TASK_LOG_DIR")
@click.option("--run", "run_id", metavar="ID", help="Wait for this run. [default: the latest]")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@handle_errors
def wait(log_dir: Path, run_id: str | None, timeout: float) -> None:
    """Wait until every task of a run is done (or dead-lettered), watching the logs."""
    deadline = time.monotonic() + timeout
    last_size = -1
    while True:
        size = sum(p.stat().st_size for p in log_dir.glob("*.log*") if p.is_file())
        if size != last_size:  # re-read only when a log grew
            last_size = size
            logs = read_logs(log_dir)
            run = logs.runs.get(run_id) if run_id else latest_run(logs)
            if run is not None and run.emitted.get("emit_done"):
                audit = summarise(run).audit
                if not audit.missing:
                    click.echo(f"run {run.run_id}: all {audit.emitted} tasks done")
                    return
        if time.monotonic() > deadline:
            raise NothingToDo(
                f"gave up after {timeout:g} s: tasks of the run are still not done",
                "are workers running? 'tasks report' shows which rows are missing",
            )
        time.sleep(0.1)
