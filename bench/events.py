"""The events section of `make bench`: what the event stream costs a worker, and reading it back.

    python -m bench.run --only events

1. Overhead: one worker, prefetch 1, zero-dot tasks, with events on (the default) and with
   --no-events, repetitions interleaved; the rate is the work section's steady rate.
   Issue 13's target: events on >= 0.95x --no-events.
2. Reading: a stream holding the events of a 100,000-task run (3 workers, the batches a
   worker sends, as utils/eventlog/stream.py builds them), read by `tasks report --source broker
   --json`, timed from spawn to exit; beside it, `tasks report --json` on a log folder with
   the same lines.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.common import BIN, Rig, Workers, run_timed, say, steady_rate
from bench.stats import fmt_num, fmt_ratio, fmt_spread, rate, ratios, spread, verdict
from utils import rabbitmq
from utils.eventlog.format import format_event
from utils.eventlog.stream import KIND_EVENTS, EventsConfig, stream_name
from utils.settings import Settings

#: Tasks in the stream that the read is timed on.
READ_TASKS = 100_000
#: Lines in one synthetic batch: what a worker doing ~1,400 tasks/s sends every 0.2 s.
BATCH_LINES = 560
#: The overhead target of issue 13.
TARGET = 0.95


def bench_events(bench: Rig) -> None:
    """Both parts, into bench.results["events"]."""
    out: dict[str, Any] = {"overhead": _overhead(bench)}
    out["read"] = _read(bench)
    bench.results["events"] = out


def _overhead(bench: Rig) -> dict[str, Any]:
    n = bench.plan.work_tasks
    on: list[float] = []
    off: list[float] = []
    cpu: dict[str, list[float]] = {"--events": [], "--no-events": []}  # the worker's, per task
    for rep in range(bench.plan.reps):
        pair = [("--events", on), ("--no-events", off)]
        for flag, rates in pair if rep % 2 == 0 else pair[::-1]:  # either goes first in turn
            q = bench.queue("events")
            bench.fill(q, n)
            logs = bench.tmp / f"{q}-logs"
            ws = Workers(bench.env, logs)
            ws.start(1, q, "--seconds-per-dot", "0", "--prefetch", "1", flag)
            ws.wait_done(n)
            cpu[flag].append(ws.stop() / n * 1e6)
            bench.admin.delete(q)  # and its stream
            counted, seconds = steady_rate(logs)
            rates.append(rate(counted, seconds))
        say(
            f"events rep {rep + 1}: events on {on[-1]:,.0f}/s, --no-events {off[-1]:,.0f}/s; "
            f"worker CPU {cpu['--events'][-1]:.0f} vs {cpu['--no-events'][-1]:.0f} us a task"
        )
    return {
        "tasks": n,
        "events_on": spread(on),
        "events_off": spread(off),
        "on_vs_off": ratios(on, off),
        # CPU time is steadier than the wall clock on a machine shared with other work.
        "cpu_us_on": spread(cpu["--events"]),
        "cpu_us_off": spread(cpu["--no-events"]),
        "cpu_on_vs_off": ratios(cpu["--events"], cpu["--no-events"]),
    }


def synthetic_run(tasks: int, workers: int = 3) -> tuple[str, list[list[str]], list[str]]:
    """A run's lines as emit and `workers` workers log them: (run id, each worker's, emit's)."""
    run = "20261127T000000-" + secrets.token_hex(2)
    t0 = datetime.now(timezone.utc) - timedelta(hours=1)

    def line(at: float, event: str, **fields: Any) -> str:
        ts = (t0 + timedelta(seconds=at)).isoformat(timespec="milliseconds")
        # format_event stamps the time now; the run's lines carry times of their own.
        return f"ts={ts.replace('+00:00', 'Z')} " + format_event(event, **fields).split(" ", 1)[1]

    emit = [
        line(0, "emit_started", run=run, source="big.csv", queue="q", order="file", total=tasks),
        line(
            0,
            "run_manifest",
            run=run,
            source="big.csv",
            queue="q",
            total=tasks,
            rows=f"1-{tasks}",
            task_ids=f"{run}-{{row}}",
        ),
    ]
    per: list[list[str]] = [[] for _ in range(workers)]
    for row in range(1, tasks + 1):
        w = row % workers
        at = row * 0.0007
        ids = {"task": f"{run}-{row}", "row": row, "run": run}
        per[w].append(
            line(
                at,
                "started",
                worker=f"w{w}",
                **ids,
                dots=0,
                attempt=1,
                redelivered=False,
                body=f"Task {row}",
            )
        )
        per[w].append(
            line(at + 0.0003, "done", worker=f"w{w}", **ids, dots=0, seconds=0.0003, attempt=1)
        )
    emit.append(
        line(
            1,
            "emit_done",
            run=run,
            queue="q",
            rows=f"1-{tasks}",
            total=tasks,
            published=tasks,
            confirmed=tasks,
            republished=0,
        )
    )
    return run, per, emit


def _read(bench: Rig) -> dict[str, Any]:
    q = bench.queue("events-read")
    run, per, emit = synthetic_run(READ_TASKS)
    settings = Settings(urls=(bench.url,), queue=q)
    conn, _url = rabbitmq.connect(settings, client_name="bench")
    try:
        rabbitmq.declare_stream(conn, stream_name(q), EventsConfig().arguments())
        pub = rabbitmq.StreamPublisher(conn, stream_name(q))
        batches = 0
        for w, lines in enumerate([*per, emit]):
            for i in range(0, len(lines), BATCH_LINES):
                chunk = "\n".join(lines[i : i + BATCH_LINES])
                pub.publish(chunk.encode(), f"bench.{w}.{i}", KIND_EVENTS, {})
                batches += 1
    finally:
        conn.close()
    logs = bench.tmp / f"{q}-logs"
    logs.mkdir()
    for w, lines in enumerate(per):
        (logs / f"worker-w{w}.log").write_text("\n".join(lines) + "\n")
    (logs / "emitter.log").write_text("\n".join(emit) + "\n")
    lines_total = sum(len(x) for x in per) + len(emit)
    empty = bench.tmp / "empty"
    empty.mkdir(exist_ok=True)
    env = {**bench.env, "TASK_QUEUE": q, "TASK_EVENTS": "0"}  # TASK_EVENTS=0: no broker look
    tasks = str(BIN / "tasks")
    from_broker: list[float] = []
    from_logs: list[float] = []
    for rep in range(bench.plan.reps):
        began = time.perf_counter()
        f = run_timed(
            [
                tasks,
                "report",
                "--source",
                "broker",
                "--run",
                run,
                "--json",
                "--log-dir",
                str(empty),
            ],
            env,
        )
        from_broker.append(time.perf_counter() - began)
        assert '"missing": []' in f.stdout, f.stdout[-500:]
        began = time.perf_counter()
        run_timed([tasks, "report", str(logs), "--run", run, "--json"], env)
        from_logs.append(time.perf_counter() - began)
        say(
            f"events read rep {rep + 1}: {READ_TASKS:,} tasks ({lines_total:,} lines, "
            f"{batches} batches) from the broker in {from_broker[-1]:.2f} s, "
            f"from logs in {from_logs[-1]:.2f} s"
        )
    bench.admin.delete(q)
    return {
        "tasks": READ_TASKS,
        "lines": lines_total,
        "batches": batches,
        "broker_seconds": spread(from_broker),
        "logs_seconds": spread(from_logs),
        "broker_vs_logs": ratios(from_broker, from_logs),
    }


def events_section(r: dict[str, Any]) -> list[str]:
    """The events part of docs/BENCHMARKS.md."""
    e = r.get("events")
    if not e:
        return []
    out = ["## 7. The event stream (issue 13)", ""]
    o = e.get("overhead")
    if o:
        v = o["on_vs_off"]
        out += [
            f"One worker, prefetch 1, {o['tasks']:,} zero-dot tasks, with events sent to "
            "`<queue>.events` (the default) and with `--no-events`, repetitions interleaved "
            "(the rate as in section 2).",
            "",
            "| | events on | --no-events | on / off | target | |",
            "|---|---|---|---|---|---|",
            f"| tasks/s | {fmt_spread(o['events_on'], '/s')} | "
            f"{fmt_spread(o['events_off'], '/s')} | {fmt_ratio(v)} | >= {TARGET}x | "
            f"{verdict(v['median'], TARGET)} |",
        ]
        if "cpu_on_vs_off" in o:
            out.append(
                f"| worker CPU, µs a task | {fmt_spread(o['cpu_us_on'])} | "
                f"{fmt_spread(o['cpu_us_off'])} | {fmt_ratio(o['cpu_on_vs_off'])} | | |"
            )
        out += [
            "",
            "What events cost a worker: on the task's path, one call and a deque append per "
            "write of its log; on a thread of its own, one confirmed publish of a batch every "
            "0.2 s (utils/eventlog/stream.py). That is below what this machine can resolve: a ratio "
            "above 1.00x is noise (other work on the machine), not a gain. CPU time, the "
            "worker's own including its event thread, is the steadier figure.",
            "",
        ]
    rd = e.get("read")
    if rd:
        b, lg = rd["broker_seconds"], rd["logs_seconds"]
        out += [
            f"Reading a run of {rd['tasks']:,} tasks ({rd['lines']:,} event lines in "
            f"{rd['batches']} stream messages): `tasks report --source broker --run ID --json` "
            f"from an empty folder took {fmt_num(b['median'])} s "
            f"({fmt_num(b['min'])}-{fmt_num(b['max'])}), process start to exit; "
            f"`tasks report LOGDIR --run ID --json` on the same lines in log files took "
            f"{fmt_num(lg['median'])} s ({fmt_num(lg['min'])}-{fmt_num(lg['max'])}): "
            f"{fmt_ratio(rd['broker_vs_logs'])} the time.",
            "",
        ]
    return out
