"""`make bench`: emit and work as real processes against a real broker, as ratios.

    python -m bench.run [--quick]

Every figure is measured next to a baseline in the same run (repetitions interleaved, so
the machine's noise hits both alike), with the median of the repetitions and the min-max.
Writes bench/results/latest.json; `python -m bench.report` turns it into docs/BENCHMARKS.md.
The broker is AMQP_URL (default: the project's local node on BROKER_PORT, 5672).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    ROOT,
    T0,
    Plan,
    Rig,
    Workers,
    cpu_seconds,
    machine,
    run_timed,
    say,
    steady_rate,
    vm,
    watch_done,
    write,
)
from bench.events import bench_events
from bench.peers import bench_peers
from bench.stats import rate, ratios, spread
from inspector.analysis import summarise_run
from inspector.runs import latest_run, read_logs
from inspector.schedule import round_robin

RESULTS = ROOT / "bench" / "results" / "latest.json"
QUEUE_TYPES = ("quorum", "classic")


QUICK = Plan(
    reps=3,
    emit_rows=(2_000,),
    per_row_rows=100,
    confirm_each_rows=200,
    work_tasks=1_000,
    work_reps=3,
    mem_emit_rows=(1_000, 10_000),
    mem_worker_tasks=(100, 2_000),
    scaling_workers=(1, 2),
)


# -- the benchmark: the sections -------------------------------------------------------------
class Bench(Rig):
    # -- 1. emit throughput ------------------------------------------------------------------
    def bench_emit(self) -> None:
        p = self.plan
        out: dict[str, Any] = {}
        for kind in QUEUE_TYPES:
            for rows in p.emit_rows:
                key = f"{kind}-{rows}"
                # The slow baselines (a) and (b) join the repetitions of the first size, on
                # fewer rows: their rate does not depend on the count.
                slow = rows == p.emit_rows[0]
                per_row = slow and kind in p.per_row_queue_types
                emit_r, c_r, a_r, b_r, rss = [], [], [], [], []
                c_lost: list[int] = []
                for rep in range(p.reps):
                    q = self.queue("emit")
                    f = self.emit(self.csv(rows), q, kind)
                    self.admin.delete(q)
                    emit_r.append(rate(rows, f.wall))
                    rss.append(f.maxrss_kb / 1024)
                    f = self.baseline_publish("no-confirm", self.csv(rows), q, kind)
                    c_r.append(rate(rows, f.wall))
                    # Without confirms nothing says whether every row arrived: count them.
                    c_lost.append(rows - self.admin.count(q))
                    self.admin.delete(q)
                    line = f"emit {key} rep {rep + 1}: emit {emit_r[-1]:,.0f}/s, "
                    line += f"(c) no confirms {c_r[-1]:,.0f}/s ({c_lost[-1]} lost)"
                    if per_row:
                        f = self.baseline_publish(
                            "per-row-connection", self.csv(p.per_row_rows), q, kind
                        )
                        a_r.append(rate(p.per_row_rows, f.wall))
                        line += f", (a) connection per row {a_r[-1]:,.0f}/s"
                    if slow:
                        f = self.baseline_publish(
                            "confirm-each", self.csv(p.confirm_each_rows), q, kind
                        )
                        b_r.append(rate(p.confirm_each_rows, f.wall))
                        line += f", (b) confirm each {b_r[-1]:,.0f}/s"
                        self.admin.delete(q)
                    say(line)
                e: dict[str, Any] = {
                    "rows": rows,
                    "queue_type": kind,
                    "emit": spread(emit_r),
                    "emit_peak_rss_mb": spread(rss),
                    "no_confirm": spread(c_r),
                    "no_confirm_lost": c_lost,
                    "vs_no_confirm": ratios(emit_r, c_r),
                }
                if b_r:
                    e["confirm_each_rows"] = p.confirm_each_rows
                    e["confirm_each"] = spread(b_r)
                    e["vs_confirm_each"] = ratios(emit_r, b_r)
                if a_r:
                    e["per_row_rows"] = p.per_row_rows
                    e["per_row_connection"] = spread(a_r)
                    e["vs_per_row_connection"] = ratios(emit_r, a_r)
                out[key] = e
        self.results["emit"] = out
        self.bench_emit_fast_path()

    def bench_emit_fast_path(self) -> None:
        """emit with its fast path (emitter/fastpath.py) and with EMIT_FAST_PATH=0, interleaved."""
        rows = self.plan.emit_rows[0]
        out: dict[str, Any] = {}
        for kind in QUEUE_TYPES:
            fast_r: list[float] = []
            plain_r: list[float] = []
            cpu: dict[str, list[float]] = {"1": [], "0": []}  # emit's own CPU seconds
            for rep in range(self.plan.reps):
                for switch, rates in (("1", fast_r), ("0", plain_r)):
                    q = self.queue("emit-fast-path")
                    logs = self.tmp / "emit-logs"
                    argv = [str(BIN / "emit"), str(self.csv(rows)), "--queue", q, "-q"]
                    argv += ["--queue-type", kind, "--log-dir", str(logs)]
                    f = run_timed(argv, {**self.env, "EMIT_FAST_PATH": switch})
                    self.admin.delete(q)
                    rates.append(rate(rows, f.wall))
                    cpu[switch].append(f.cpu)
                say(
                    f"emit {kind}-{rows} rep {rep + 1}: fast path {fast_r[-1]:,.0f}/s, "
                    f"EMIT_FAST_PATH=0 {plain_r[-1]:,.0f}/s; emit CPU {cpu['1'][-1]:.2f} s "
                    f"vs {cpu['0'][-1]:.2f} s"
                )
            out[kind] = {
                "rows": rows,
                "queue_type": kind,
                "fast": spread(fast_r),
                "plain": spread(plain_r),
                "fast_vs_plain": ratios(fast_r, plain_r),
                # CPU time is what the fast path saves, and it is steadier than the wall
                # clock on a machine shared with other work.
                "fast_cpu": spread(cpu["1"]),
                "plain_cpu": spread(cpu["0"]),
                "plain_cpu_vs_fast": ratios(cpu["0"], cpu["1"]),
            }
        self.results["emit_fast_path"] = out

    # -- 2 and 5. work throughput and scaling ---------------------------------------------------
    def work_run(self, workers: int, prefetch: int) -> dict[str, float]:
        """Fill a queue, let `workers` workers drain it; the steady rate from their logs."""
        q = self.queue("work")
        n = self.plan.work_tasks
        self.fill(q, n)
        logs = self.tmp / f"{q}-logs"
        ws = Workers(self.env, logs)
        cpu0 = cpu_seconds(self.broker)
        began = time.perf_counter()
        ws.start(workers, q, "--seconds-per-dot", "0", "--prefetch", str(prefetch))
        ws.wait_done(n)
        wall = time.perf_counter() - began
        cpu1 = cpu_seconds(self.broker)
        # The workers' CPU up to their exit, a little after `wall`: an upper bound.
        worker_cpu = ws.stop()
        self.admin.delete(q)
        counted, seconds = steady_rate(logs)
        return {
            "rate": rate(counted, seconds),
            "broker_cpu": (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else -1,
            "workers_cpu": worker_cpu / wall,
        }

    def baseline_consume(self, prefetch: int) -> float:
        q = self.queue("consume")
        n = self.plan.work_tasks
        self.fill(q, n)
        argv = [sys.executable, str(ROOT / "bench" / "baseline_consume.py"), str(n)]
        f = run_timed(
            [*argv, "--url", self.url, "--queue", q, "--prefetch", str(prefetch)], self.env
        )
        self.admin.delete(q)
        got = json.loads(f.stdout.strip().splitlines()[-1])
        return rate(got["messages"], got["seconds"])

    def bench_work(self) -> None:
        p = self.plan
        out: dict[str, Any] = {"tasks": p.work_tasks, "queue_type": "quorum"}
        counts = sorted({1, 3, *p.scaling_workers})
        for prefetch in (1, 10):
            base: list[float] = []
            runs: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
            for rep in range(p.work_reps):
                # The baseline and the workers take turns going first, so that neither is
                # always the one run just after the previous run's clean-up.
                line = []
                if rep % 2 == 0:
                    base.append(self.baseline_consume(prefetch))
                for w in counts if prefetch == 1 else [1]:
                    runs[w].append(self.work_run(w, prefetch))
                    line.append(f"{w} worker(s) {runs[w][-1]['rate']:,.0f}/s")
                if rep % 2 == 1:
                    base.append(self.baseline_consume(prefetch))
                line.insert(0, f"baseline {base[-1]:,.0f}/s")
                say(f"work prefetch {prefetch} rep {rep + 1}: " + ", ".join(line))
            one = [r["rate"] for r in runs[1]]
            out[f"prefetch-{prefetch}"] = {
                "baseline": spread(base),
                "workers": {
                    str(w): {
                        "rate": spread([r["rate"] for r in rs]),
                        "vs_baseline": ratios([r["rate"] for r in rs], base),
                        "vs_one_worker": ratios([r["rate"] for r in rs], one),
                        "broker_cpu": spread([r["broker_cpu"] for r in rs]),
                        "workers_cpu": spread([r["workers_cpu"] for r in rs]),
                    }
                    for w, rs in runs.items()
                    if rs
                },
            }
        self.results["work"] = out

    # -- 3. fair dispatch ------------------------------------------------------------------------
    def fair_run(self, order: str, prefetch: int) -> dict[str, float]:
        p = self.plan
        q = self.queue("fair")
        logs = self.tmp / f"{q}-logs"
        ws = Workers(self.env, logs)
        spd = str(p.fair_seconds_per_dot)
        ws.start(p.fair_workers, q, "--seconds-per-dot", spd, "--prefetch", str(prefetch))
        ws.wait_ready(p.fair_workers)
        csv = ROOT / "tasks.csv"
        rows = sum(1 for line in csv.read_text().splitlines() if line.strip())
        self.emit_into(csv, q, logs, "--order", order)
        ws.wait_done(rows)
        ws.stop()
        self.admin.delete(q)
        run = latest_run(read_logs(logs))
        assert run is not None
        s = summarise_run(run)
        durations = [t.done[0].seconds or 0.0 for t in s.tasks if t.done]
        return {
            "makespan": s.figures.makespan,
            "greedy": s.figures.greedy,
            "lpt": s.figures.lpt,
            "lower_bound": s.figures.lower_bound,
            "round_robin": round_robin(durations, p.fair_workers),
        }

    def emit_into(self, csv: Path, queue: str, logs: Path, *extra: str) -> None:
        argv = [str(BIN / "emit"), str(csv), "--queue", queue, "-q", "--log-dir", str(logs)]
        run_timed([*argv, *extra], self.env)

    def bench_fair(self) -> None:
        p = self.plan
        out: dict[str, Any] = {
            "workers": p.fair_workers,
            "seconds_per_dot": p.fair_seconds_per_dot,
            "tasks": "tasks.csv",
        }
        cases = {
            "file order, prefetch 1": ("file", 1, "greedy"),
            "longest-first, prefetch 1": ("longest-first", 1, "lpt"),
            "file order, prefetch 1000": ("file", 1000, "greedy"),
        }
        got: dict[str, list[dict[str, float]]] = {k: [] for k in cases}
        for rep in range(p.reps):
            for name, (order, prefetch, _) in cases.items():
                got[name].append(self.fair_run(order, prefetch))
            say(
                f"fair rep {rep + 1}: "
                + ", ".join(f"{k} {v[-1]['makespan']:.2f} s" for k, v in got.items())
            )
        for name, (_, _, ref) in cases.items():
            rs = got[name]
            ms = [r["makespan"] for r in rs]
            out[name] = {
                "makespan": spread(ms),
                "reference": ref,
                "vs_reference": ratios(ms, [r[ref] for r in rs]),
                "vs_lower_bound": ratios(ms, [r["lower_bound"] for r in rs]),
                "vs_greedy": ratios(ms, [r["greedy"] for r in rs]),
                "greedy": spread([r["greedy"] for r in rs]),
                "lpt": spread([r["lpt"] for r in rs]),
                "lower_bound": spread([r["lower_bound"] for r in rs]),
                "round_robin_schedule": spread([r["round_robin"] for r in rs]),
            }
        self.results["fair"] = out

    # -- 4. memory -------------------------------------------------------------------------------
    def bench_memory(self) -> None:
        p = self.plan
        out: dict[str, Any] = {}
        small, big = p.mem_emit_rows
        peaks = {}
        worker_q = self.queue("mem-worker")
        for rows in (small, big):
            # The small run fills the queue the worker is measured on.
            q = worker_q if rows == small else self.queue("mem-emit")
            f = self.emit(self.csv(rows), q, "quorum")
            if q != worker_q:
                self.admin.delete(q)
            peaks[rows] = f.maxrss_kb / 1024
            say(f"memory: emit {rows:,} rows, peak RSS {peaks[rows]:.1f} MB, {f.wall:.1f} s")
        out["emit"] = {
            "rows": [small, big],
            "peak_rss_mb": [peaks[small], peaks[big]],
            "growth": peaks[big] / peaks[small],
            "repetitions": 1,
        }
        # The worker: RSS at the first and the last count, read while it runs.
        first, last = p.mem_worker_tasks
        if last > small:
            self.emit(self.csv(last - small, "more"), worker_q, "quorum")
        logs = self.tmp / "mem-worker-logs"
        ws = Workers(self.env, logs)
        ws.start(
            1,
            worker_q,
            "--seconds-per-dot",
            "0",
            "--prefetch",
            str(p.mem_worker_prefetch),
        )
        pid = ws.procs[0].pid
        samples: dict[int, tuple[int, int | None]] = {}
        for target in (first, last):
            done = watch_done(logs / "worker-w1.log", target, ws.procs[0])
            samples[target] = (done, vm(pid, "VmRSS"))
        ws.stop()
        self.admin.delete(worker_q)
        (n1, r1), (n2, r2) = samples[first], samples[last]
        if r1 is None or r2 is None:
            raise RuntimeError("could not read the worker's VmRSS")
        say(f"memory: worker RSS {r1 / 1024:.1f} MB after {n1:,}, {r2 / 1024:.1f} MB after {n2:,}")
        out["worker"] = {
            "prefetch": p.mem_worker_prefetch,
            "tasks": [n1, n2],
            "rss_mb": [r1 / 1024, r2 / 1024],
            "growth": r2 / r1,
        }
        self.results["memory"] = out

    # -- 7. the event stream: its cost to a worker, and reading it back (bench/events.py) -------
    def bench_events(self) -> None:
        bench_events(self)

    # -- 6. peers: Dramatiq and Celery beside our worker (bench/peers.py) ------------------------
    def bench_peers(self) -> None:
        bench_peers(self)


def main() -> None:
    """Run every section, print progress, write bench/results/latest.json."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the bench runs")
    ap.add_argument(
        "--only", nargs="*", default=None, help="sections: emit work fair memory peers events"
    )
    ap.add_argument("--work-tasks", type=int, help="tasks per work and peers run (Plan's if unset)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    plan = QUICK if a.quick else Plan()
    if a.work_tasks:
        plan = replace(plan, work_tasks=a.work_tasks)
    port = os.environ.get("BROKER_PORT", "5672")
    url = os.environ.get("AMQP_URL") or f"amqp://guest:guest@localhost:{port}/%2F"
    sections = a.only or ["emit", "work", "fair", "memory", "peers", "events"]
    say(f"bench: {', '.join(sections)} against {re.sub(r':[^:@/]*@', ':***@', url)}")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(plan, url, Path(tmp))
        started = datetime.now(timezone.utc)
        info = machine(bench.admin)
        for name in sections:
            getattr(bench, f"bench_{name}")()
            # Written after every section, so that a failure late on keeps what was measured.
            write(a.out, document(a, plan, started, info, load_start, bench.results))
        bench.admin.close()
    write(a.out, document(a, plan, started, info, load_start, bench.results))
    say(f"bench: wrote {a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}")


def document(
    a: argparse.Namespace,
    plan: Plan,
    started: datetime,
    info: dict[str, Any],
    load_start: tuple[float, float, float],
    results: dict[str, Any],
) -> dict[str, Any]:
    """The results file's content."""
    return {
        "date": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - T0, 1),
        "command": "make bench",
        "quick": a.quick,
        "plan": asdict(plan),
        "machine": info,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        **results,
    }


if __name__ == "__main__":
    main()
