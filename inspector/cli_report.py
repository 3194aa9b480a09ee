"""`tasks report` and `tasks wait`: reading the logs back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from inspector import timeline
from inspector.analysis import RunSummary, summarise_run
from inspector.render import render_text, report_csv, report_json
from inspector.runs import LogSet, Run, all_runs, latest_run, log_files, read_logs
from utils.errors import BadInput, ExitCode, NothingToDo
from utils.options import handle_errors
from utils.plural import plural

LOG_DIR = click.Path(file_okay=False, path_type=Path)
#: Skipped lines named one by one on stderr; the rest are counted.
SKIPPED_SHOWN = 10


def _pick_runs(logs: LogSet, log_dir: Path, run_id: str | None, every: bool) -> list[Run]:
    if every:
        runs = all_runs(logs)
    elif run_id:
        runs = [logs.runs[run_id]] if run_id in logs.runs else []
    else:
        latest = latest_run(logs)
        runs = [latest] if latest else []
    if runs:
        return runs
    if run_id:
        known = ", ".join(r.run_id for r in all_runs(logs)[-5:]) or "none"
        raise NothingToDo(
            f"no log lines about run {run_id} in {log_dir}/",
            f"the runs there are: {known} (use --all to see every run)",
        )
    if not log_dir.is_dir():
        raise NothingToDo(
            f"no log folder {log_dir}/", "run 'emit' and some 'work' first, or name the folder"
        )
    raise NothingToDo(
        f"no log lines about any run in {log_dir}/",
        "run 'emit' and some 'work' first, or name the right folder",
    )


@click.command()
@click.argument("log_dir", type=LOG_DIR, default=Path("logs"), envvar="TASK_LOG_DIR")
@click.option("--run", "run_id", metavar="ID", help="Report on this run. [default: the latest]")
@click.option("--all", "every", is_flag=True, help="Report on every run in the logs.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON (docs/REPORT.md).")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV line per task delivery.")
@click.option(
    "--timeline",
    "timeline_to",
    metavar="FILE.png|FILE.svg|-",
    help="Draw a Gantt chart of the run to FILE; '-' prints a text timeline instead.",
)
@handle_errors
def report(
    log_dir: Path,
    run_id: str | None,
    every: bool,
    as_json: bool,
    as_csv: bool,
    timeline_to: str | None,
) -> None:
    """Which worker did which task of a run, and whether any task was lost or run twice.

    Reads LOG_DIR (default logs/): the emitter's log and every worker's, rotated files
    too. Lines it cannot read are named on stderr and skipped. Exits 1 when a task of a
    run shown was never done.
    """
    if as_json and as_csv:
        raise BadInput("--json and --csv cannot be combined", "pick one")
    if (
        timeline_to
        and timeline_to != "-"
        and Path(timeline_to).suffix.lower() not in (".png", ".svg")
    ):
        raise BadInput(
            f"--timeline {timeline_to}: the picture must be a .png or .svg file",
            "or use --timeline - for a text timeline",
        )
    logs = read_logs(log_dir)
    runs = _pick_runs(logs, log_dir, run_id, every)
    pairs = [(r, summarise_run(r)) for r in runs]
    if as_json:
        click.echo(json.dumps(report_json(log_dir, pairs, logs.skipped), indent=2))
    elif as_csv:
        click.echo(report_csv(pairs), nl=False)
    else:
        for i, (r, s) in enumerate(pairs):
            if i:
                click.echo("\n" + "-" * 72 + "\n")
            click.echo(render_text(r, s))
            if timeline_to == "-":
                click.echo("\n" + timeline.text_timeline(s))
    if timeline_to and timeline_to != "-":
        _draw(pairs[-1][1], Path(timeline_to), quiet=as_json or as_csv)
    elif timeline_to == "-" and (as_json or as_csv):
        click.echo(timeline.text_timeline(pairs[-1][1]), err=True)
    _name_skipped(logs)
    if any(s.audit.missing for _r, s in pairs):
        raise SystemExit(int(ExitCode.NOTHING_DONE))


def _draw(s: RunSummary, path: Path, quiet: bool) -> None:
    try:
        timeline.save(s, path)
    except OSError as exc:
        raise BadInput(
            f"cannot write the timeline to {path}: {exc.strerror}",
            "check that the folder exists and is writable",
        ) from None
    click.echo(f"timeline of run {s.run_id} written to {path}", err=quiet)


def _name_skipped(logs: LogSet) -> None:
    for s in logs.skipped[:SKIPPED_SHOWN]:
        click.echo(f"skipped {s.file}:{s.line}: {s.why}", err=True)
    if len(logs.skipped) > SKIPPED_SHOWN:
        click.echo(f"skipped {plural(len(logs.skipped) - SKIPPED_SHOWN, 'more line')}", err=True)


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
        size = sum(p.stat().st_size for p in log_files(log_dir))
        if size != last_size:  # re-read only when a log grew
            last_size = size
            logs = read_logs(log_dir)
            run = logs.runs.get(run_id) if run_id else latest_run(logs)
            if run is not None and run.emitted.get("emit_done"):
                audit = summarise_run(run).audit
                if not audit.missing:
                    click.echo(f"run {run.run_id}: all {plural(audit.emitted, 'task')} done")
                    return
        if time.monotonic() > deadline:
            raise NothingToDo(
                f"gave up after {timeout:g} s: tasks of the run are still not done",
                "are workers running? 'tasks report' shows which rows are missing",
            )
        time.sleep(0.1)
