"""`tasks report` and `tasks wait`: reading the logs back."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import click

from inspector import timeline
from inspector.analysis import RunSummary, summarise_run, summarise_untracked
from inspector.render import render_text, render_untracked
from inspector.render_data import json_text, report_csv, report_json
from inspector.runs import (
    all_runs,
    latest_run,
    log_files,
    of_queue,
    queues_with_runs,
    read_logs,
)
from inspector.stream import read_broker, set_aside_notes
from inspector.whereabouts import Whereabouts, locate, look, queue_of
from utils.cli import (
    broker_options,
    echo_prose,
    echo_safe,
    handle_errors,
    make_settings,
    management_url_option,
    trust_option,
)
from utils.errors import BadInput, ExitCode, NothingToDo, TaskToolError
from utils.eventlog.format import parse_ts
from utils.eventlog.records import LogSet, Run
from utils.eventlog.schema import EMIT_DONE, EMIT_STARTED
from utils.settings import DEFAULT_QUEUE, Settings
from utils.text import plural, prose_width, safe

LOG_DIR = click.Path(file_okay=False, path_type=Path)
#: Skipped lines named one by one on stderr; the rest are counted.
SKIPPED_SHOWN = 10
#: Seconds the report gives the management API to count deliveries it has not counted yet
#: (its statistics are collected every 5 s by default).
MANAGEMENT_LAG = 6.0


def chosen_queue(queue: str) -> str | None:
    """The queue whose runs a command is about: the one --queue or TASK_QUEUE names, or
    None (any queue's) when neither does."""
    ctx = click.get_current_context()
    source = ctx.get_parameter_source("queue")
    return None if source == click.core.ParameterSource.DEFAULT else queue


def _no_run_of(logs: LogSet, queue: str, where: Path | str) -> NothingToDo:
    queues = queues_with_runs(logs)
    there = f"{where}/" if isinstance(where, Path) else where
    return NothingToDo(
        f"no run of queue '{queue}' in {there}",
        "the queues with runs there: " + ", ".join(queues) + " (pick one with --queue)"
        if queues
        else "no run of any queue there: run 'emit' first",
    )


def _pick_runs(
    logs: LogSet, log_dir: Path | str, run_id: str | None, every: bool, queue: str | None = None
) -> list[Run]:
    if every:
        runs = [r for r in all_runs(logs) if of_queue(r, queue)]
    elif run_id:
        runs = [logs.runs[run_id]] if run_id in logs.runs else []
    else:
        latest = latest_run(logs, queue)
        runs = [latest] if latest else []
    if runs:
        return runs
    if queue is not None and not run_id and logs.runs:
        raise _no_run_of(logs, queue, log_dir)
    if run_id:
        known = ", ".join(r.run_id for r in all_runs(logs)[-5:]) or "none"
        where = f"{log_dir}/" if isinstance(log_dir, Path) else log_dir
        raise NothingToDo(
            f"no log lines about run {run_id} in {where}",
            f"the runs there are: {known} (use --all to see every run)",
        )
    if isinstance(log_dir, str):
        raise NothingToDo(
            f"no events about any run in {log_dir}",
            "run 'emit' and some 'work' (with events on, the default) first",
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
@click.argument("folder", metavar="[LOG_DIR]", type=LOG_DIR, required=False)
@click.option(
    "--source",
    type=click.Choice(["logs", "broker"]),
    envvar="TASK_REPORT_SOURCE",
    default="logs",
    show_default=True,
    help="logs: read LOG_DIR, what ran on this machine. broker: read the event stream "
    "<queue>.events, what every worker and emit sent, from any machine; no log folder "
    "needed (env TASK_REPORT_SOURCE).",
)
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
@click.option(
    "--logs-only",
    is_flag=True,
    help="Do not ask the broker where the tasks not done are; judge from the logs alone.",
)
@trust_option
@management_url_option
@broker_options
@handle_errors
def report(
    folder: Path | None,
    source: str,
    run_id: str | None,
    every: bool,
    as_json: bool,
    as_csv: bool,
    timeline_to: str | None,
    logs_only: bool,
    urls: tuple[str, ...],
    queue: str,
    queue_type: str,
    log_dir: Path,
) -> None:
    """Which worker did which task of a run, and whether any task was lost or run twice.

    Reads LOG_DIR (default: --log-dir, logs/): the emitter's log and every worker's,
    rotated files too. With --source broker, reads the event stream on the broker instead:
    every machine's events, no log folder needed. Lines it cannot read are named on stderr
    and skipped. For the
    tasks not done, it asks the broker (--url) whether they wait in the queue, are in
    progress, or were taken by another consumer. Exits 1 when a task of a run shown is
    missing: neither done, in the queue, in progress, dead-lettered, nor taken elsewhere.
    """
    log_dir = folder or log_dir
    _check_formats(as_json, as_csv, timeline_to)
    settings = make_settings(urls, queue, queue_type, log_dir)
    where: Path | str = log_dir
    if source == "broker":
        since = _run_start(run_id)
        logs, got = read_broker(settings, since=since)
        if since is not None and EMIT_STARTED not in logs.runs.get(str(run_id), Run("")).emitted:
            # Its start is older than the id says (an emitter whose clock runs ahead of the
            # broker's by more than the margin): read it all.
            logs, got = read_broker(settings)
        where = f"the event stream {got.name}"
    else:
        logs = read_logs(log_dir)
    runs = _pick_runs(logs, where, run_id, every, chosen_queue(queue))
    every_run = [(r, summarise_run(r, logs.workers)) for r in all_runs(logs)]
    by_id = {r.run_id: s for r, s in every_run}
    pairs = [(r, by_id[r.run_id]) for r in runs]
    wheres = _whereabouts(
        logs, pairs, every_run, None if logs_only else settings, as_json or as_csv
    )
    # From here on, "missing" is the judgement with the broker's counts, not the logs' alone.
    shown = [
        (r, replace(s, audit=replace(s.audit, missing=w.missing)), w)
        for (r, s), w in zip(pairs, wheres, strict=True)
    ]
    pairs = [(r, s) for r, s, _w in shown]
    untracked = summarise_untracked(logs.untracked)
    # Beside a report from the logs: what the stream knows that logs/ does not. Beside one
    # from the stream: whose last events it cannot have.
    if source == "broker":
        notes = set_aside_notes(got) + _cut_short(logs, pairs, settings.queue)
    else:
        notes = _elsewhere(settings, pairs) if not logs_only else []
    position = ""
    if not run_id and not every and len(every_run) > 1:
        position = f"the latest of {len(every_run)} in " + (
            f"{log_dir}/" if source == "logs" else str(where)
        )
    if as_json:
        doc = report_json(log_dir, shown, logs.skipped, len(every_run), untracked)
        doc["source"] = source
        if source == "broker":
            doc["log_dir"] = None
            doc["stream"] = got.name
        click.echo(json_text(doc))
    elif as_csv:
        click.echo(report_csv(pairs, escaped=sys.stdout.isatty()), nl=False)
    else:
        _echo_text(shown, position, timeline_to == "-")
        if render_untracked(untracked):
            echo_safe("\n" + render_untracked(untracked))
    quiet = as_json or as_csv
    for line in notes:
        echo_prose(("" if quiet else "\n") + line, err=quiet)
    if timeline_to and timeline_to != "-":
        _draw(pairs[-1][1], Path(timeline_to), quiet=quiet)
    elif timeline_to == "-" and quiet:
        echo_safe(timeline.text_timeline(pairs[-1][1]), err=True)
    _name_skipped(logs)
    if any(s.audit.missing for _r, s in pairs):
        raise SystemExit(int(ExitCode.NOTHING_DONE))


def _check_formats(as_json: bool, as_csv: bool, timeline_to: str | None) -> None:
    """The output options' own errors, before any log is read."""
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


def _whereabouts(
    logs: LogSet,
    pairs: list[tuple[Run, RunSummary]],
    every_run: list[tuple[Run, RunSummary]],
    settings: Settings | None,
    quiet: bool,
) -> list[Whereabouts]:
    """Where each shown run's tasks not done are; settings None: from the logs alone."""
    if settings is None:
        return locate(pairs, every_run, logs, None, DEFAULT_QUEUE)
    queues = sorted({queue_of(r, settings.queue) for r, _s in pairs})
    view = look(settings, queues, set(logs.workers))
    wheres = locate(pairs, every_run, logs, view, settings.queue)
    # The management API counts deliveries every 5 s: tasks another consumer took just now
    # look missing until it has. Ask again for a few seconds before calling them missing.
    if view.management and any(w.missing for w in wheres):
        if not quiet:
            click.echo("checking again: the management API's counts lag by up to 5 s", err=True)
        deadline = time.monotonic() + MANAGEMENT_LAG
        while any(w.missing for w in wheres) and time.monotonic() < deadline:
            time.sleep(1.0)
            view = look(settings, queues, set(logs.workers))
            wheres = locate(pairs, every_run, logs, view, settings.queue)
    return wheres


def _echo_text(
    shown: list[tuple[Run, RunSummary, Whereabouts]], position: str, text_timeline: bool
) -> None:
    width = prose_width()
    for i, (r, s, w) in enumerate(shown):
        if i:
            click.echo("\n" + "-" * 72 + "\n")
        echo_safe(render_text(r, s, w, position, width))
        if text_timeline:
            echo_safe("\n" + timeline.text_timeline(s))


def _run_start(run_id: str | None) -> datetime | None:
    """When a run began, from its id (20261126T235900-ab12), to read the stream from there."""
    if not run_id or len(run_id) < 15:
        return None
    try:
        return parse_ts(
            f"{run_id[0:4]}-{run_id[4:6]}-{run_id[6:8]}T{run_id[9:11]}:{run_id[11:13]}:"
            f"{run_id[13:15]}Z"
        )
    except ValueError:
        return None


def _elsewhere(settings: Settings, pairs: list[tuple[Run, RunSummary]]) -> list[str]:
    """Notes for runs of which the event stream knows more than these logs.

    Best effort and quiet: no broker, no stream, or events turned off (TASK_EVENTS=0) means
    no note, except a hint when rows are missing here.
    """
    if not pairs or os.environ.get("TASK_EVENTS", "").lower() in ("0", "false", "no", "off"):
        return []
    starts = [s.start for _r, s in pairs if s.start is not None]
    starts += [t for r, _s in pairs if (t := _run_start(r.run_id)) is not None]
    try:
        theirs, _got = read_broker(settings, since=min(starts) if starts else None)
    except TaskToolError:
        if any(s.audit.missing for _r, s in pairs):
            return [
                "note: rows missing here may have run on other machines; "
                "'tasks report --source broker' reads every worker's events from the broker"
            ]
        return []
    notes = []
    for run, ours in pairs:
        other = theirs.runs.get(run.run_id)
        if other is None:
            continue
        here = {t.task_id for t in ours.tasks if t.done}
        there = [t for t in other.tasks.values() if t.done and t.task_id not in here]
        if not there:
            continue
        workers = sorted({a.worker for t in there for a in t.done})
        total = max(ours.audit.emitted, len(other.rows), len(other.tasks))
        names = ", ".join(workers[:5]) + (", ..." if len(workers) > 5 else "")
        notes.append(
            f"note: {len(there)} of {total} tasks of run {run.run_id} ran on workers whose "
            f"logs are not here ({names}); 'tasks report --source broker' shows them all"
        )
    return notes


def _cut_short(logs: LogSet, pairs: list[tuple[Run, RunSummary]], queue: str) -> list[str]:
    """A note for a report from the stream with rows missing, when workers' events end
    without a stop: a worker killed with SIGKILL did not send its last moments' events
    (docs/REPORT.md), so what it finished then has no `done` here but is done."""
    if not any(s.audit.missing for _r, s in pairs):
        return []
    cut = sorted(life.name for life in logs.workers.values() if life.running_on(queue))
    if not cut:
        return []
    names = ", ".join(cut[:5]) + (", ..." if len(cut) > 5 else "")
    return [
        f"note: the events of worker(s) {names} end without worker_stopped (killed, or "
        "still running): a worker killed with SIGKILL sends not its last 0.2 s of events, so "
        "tasks it finished then are missing here but done in its log; "
        "'tasks report' on its logs tells"
    ]


def _draw(s: RunSummary, path: Path, quiet: bool) -> None:
    try:
        timeline.save(s, path)
    except OSError as exc:
        raise BadInput(
            f"cannot write the timeline to {path}: {exc.strerror}",
            "check that the folder exists and is writable",
        ) from None
    echo_safe(f"timeline of run {safe(s.run_id)} written to {path}", err=quiet)


def _name_skipped(logs: LogSet) -> None:
    for s in logs.skipped[:SKIPPED_SHOWN]:
        echo_safe(f"skipped {s.file}:{s.line}: {s.why}", err=True)
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
@click.option(
    "--queue",
    envvar="TASK_QUEUE",
    default=DEFAULT_QUEUE,
    show_default=True,
    help="Wait for the latest run of this queue (env TASK_QUEUE). [default: of any queue, "
    "when neither is set]",
)
@handle_errors
def wait(log_dir: Path, run_id: str | None, timeout: float, queue: str) -> None:
    """Wait until every task of a run is done (or dead-lettered), watching the logs."""
    of_queue = chosen_queue(queue)
    deadline = time.monotonic() + timeout
    last_size = -1
    while True:
        size = sum(p.stat().st_size for p in log_files(log_dir))
        if size != last_size:  # re-read only when a log grew
            last_size = size
            logs = read_logs(log_dir)
            run = logs.runs.get(run_id) if run_id else latest_run(logs, of_queue)
            if run is not None and run.emitted.get(EMIT_DONE):
                audit = summarise_run(run).audit
                if not audit.missing:
                    click.echo(f"run {safe(run.run_id)}: all {plural(audit.emitted, 'task')} done")
                    return
        if time.monotonic() > deadline:
            if run is None and of_queue is not None and not run_id:
                raise _no_run_of(logs, of_queue, log_dir)
            raise NothingToDo(
                f"gave up after {timeout:g} s: tasks of the run are still not done",
                "are workers running? 'tasks report' says where the tasks not done are",
            )
        time.sleep(0.1)
