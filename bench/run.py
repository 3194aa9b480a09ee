"""`make bench`: emit and work as real processes against a real broker, as ratios.

    python -m bench.run [--quick]

Every figure is measured next to a baseline in the same run (repetitions interleaved, so
the machine's noise hits both alike), with the median of the repetitions and the min-max.
Writes bench/results/latest.json; `python -m bench.report` turns it into docs/BENCHMARKS.md.
The broker is AMQP_URL (default: the project's local node on BROKER_PORT, 5672).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pika

from bench.stats import rate, ratios, spread
from inspector.analysis import summarise_run
from inspector.runs import latest_run, read_logs
from inspector.schedule import round_robin
from utils.eventlog.format import parse_ts

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True)
class Plan:
    """Sizes and repetition counts, chosen so that the whole run fits in 10 minutes."""

    reps: int = 3
    emit_rows: tuple[int, ...] = (20_000, 200_000)
    per_row_rows: int = 1_000  # baseline (a): a connection per row is slow
    per_row_queue_types: tuple[str, ...] = ("quorum",)  # the default type only, for time
    confirm_each_rows: int = 1_000  # baseline (b): one round trip per row
    # 10,000 rather than the 20,000: the rate is taken while every worker is busy,
    # so the count only sets how long that lasts; 20,000 would not fit in 10 minutes.
    work_tasks: int = 10_000
    # The work section's repetitions: one worker against the bare consumer at prefetch 1
    # moves by +-10% from one repetition to the next on a 2-core machine, so 3 say little.
    work_reps: int = 5
    fair_seconds_per_dot: float = 0.05
    fair_workers: int = 3
    mem_emit_rows: tuple[int, int] = (100_000, 1_000_000)
    mem_worker_tasks: tuple[int, int] = (1_000, 100_000)
    # Prefetch 10 runs the same code per task as prefetch 1, in half the time.
    mem_worker_prefetch: int = 10
    scaling_workers: tuple[int, ...] = (1, 2, 4)


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


# -- progress ---------------------------------------------------------------------------------
T0 = time.monotonic()


def say(text: str) -> None:
    """One progress line with the time since the start."""
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


# -- the broker, as the benchmark's own admin client --------------------------------------------
class Admin:
    """A plain connection for deleting queues and counting messages between runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.server = {
            k: (v.decode() if isinstance(v, bytes) else v)
            for k, v in self.conn._impl.server_properties.items()
            if k in ("product", "version")
        }

    def count(self, queue: str) -> int:
        """Messages in a queue once the count stops moving (a publish may still be landing)."""
        last = -1
        for _ in range(15):
            ch = self.conn.channel()
            n = ch.queue_declare(queue, passive=True).method.message_count
            ch.close()
            if n == last:
                return n
            last = n
            time.sleep(0.2)
        return last

    def delete(self, queue: str) -> None:
        """Delete a queue, its dead-letter queue and the event stream its workers and emit made."""
        for name in (queue, queue + ".dead", queue + ".events"):
            ch = self.conn.channel()
            ch.queue_delete(name)
            ch.close()

    def close(self) -> None:
        self.conn.close()


def broker_pid(port: str | None = None) -> int | None:
    """The beam.smp of our local node, when `scripts/broker` started it (for its CPU time)."""
    port = port or os.environ.get("BROKER_PORT", "5672")
    pidfile = ROOT / ".broker" / port / "rabbit.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a running process, from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm(pid: int, key: str) -> int | None:
    """A VmRSS / VmHWM line of /proc/PID/status, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Finished:
    """A child process that ran to its end: how long, how much CPU and memory, what it said."""

    wall: float
    cpu: float
    maxrss_kb: int
    stdout: str
    code: int


def run_timed(argv: Sequence[str], env: dict[str, str], timeout: float = 600) -> Finished:
    """Run a command to its end; wall time from spawn to reap, and the child's own rusage."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = _wait4(proc, timeout)
        wall = time.perf_counter() - began
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {code}:\n{text[-2000:]}")
    return Finished(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, text, code)


def _wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, Any]:
    """os.wait4 with a time-out (polling, as wait4 itself has none)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{proc.args!r} did not finish within {timeout:g} s")
        time.sleep(0.02)


class Workers:
    """`work` processes started in the background, each logging to log_dir."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, queue: str, *extra: str) -> None:
        for i in range(1, n + 1):
            argv = [str(BIN / "work"), "--name", f"w{i}", "--queue", queue, "-q"]
            argv += ["--log-dir", str(self.log_dir), *extra]
            self.procs.append(
                subprocess.Popen(
                    argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )

    def wait_ready(self, n: int, timeout: float = 60) -> None:
        """Until n worker_ready events are in the logs (every worker is consuming)."""
        self._wait(lambda: count_events(self.log_dir, "worker_ready") >= n, timeout, "ready")

    def wait_done(self, n: int, timeout: float = 180) -> None:
        self._wait(lambda: count_events(self.log_dir, "done") >= n, timeout, f"{n} done")

    def _wait(self, ok: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p for p in self.procs if p.poll() not in (None, 0)]
            if dead:
                raise RuntimeError(f"a worker exited {dead[0].returncode} before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not {what} within {timeout:g} s")
            time.sleep(0.05)

    def reap(self, timeout: float = 120) -> float:
        """Wait for every worker to exit on its own; their total CPU seconds."""
        cpu = 0.0
        for p in self.procs:
            _, _, usage = _wait4(p, timeout)
            cpu += usage.ru_utime + usage.ru_stime
        self.procs = []
        return cpu

    def stop(self) -> float:
        """SIGTERM (a warm stop) to every worker, then reap them."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        return self.reap()


def count_events(log_dir: Path, event: str) -> int:
    needle = f" event={event} "
    n = 0
    for path in log_dir.glob("worker-*.log"):
        with open(path, encoding="utf-8") as f:
            n += sum(1 for line in f if needle in line)
    return n


def steady_rate(log_dir: Path) -> tuple[int, float]:
    """Tasks done per second while every worker was busy: from the last worker's first
    `started` to the last `done`, counting the tasks done in that window."""
    firsts: list[str] = []
    dones: list[str] = []
    for path in sorted(log_dir.glob("worker-*.log")):
        first = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                if " event=done " in line:
                    dones.append(line[3:27])
                elif first is None and " event=started " in line:
                    first = line[3:27]
        if first:
            firsts.append(first)
    t0, t1 = parse_ts(max(firsts)), parse_ts(max(dones))
    counted = sum(1 for d in dones if parse_ts(d) >= t0)
    return counted, (t1 - t0).total_seconds()


# -- the benchmark --------------------------------------------------------------------------------
class Bench:
    def __init__(self, plan: Plan, url: str, tmp: Path) -> None:
        self.plan = plan
        self.url = url
        self.tmp = tmp
        self.env = dict(os.environ, AMQP_URL=url, PYTHONUNBUFFERED="1")
        self.admin = Admin(url)
        self.broker = broker_pid()
        self.results: dict[str, Any] = {}
        self.n = 0

    def queue(self, what: str) -> str:
        self.n += 1
        return f"bench-{what}-{self.n}"

    def csv(self, rows: int, name: str = "rows") -> Path:
        """A CSV of `rows` zero-dot tasks ('Task 1', 'Task 2', ...), made once."""
        path = self.tmp / f"{name}-{rows}.csv"
        if not path.exists():
            with open(path, "w") as f:
                f.writelines(f"Task {i}\n" for i in range(1, rows + 1))
        return path

    def emit(self, csv: Path, queue: str, kind: str, *extra: str) -> Finished:
        logs = self.tmp / "emit-logs"
        argv = [str(BIN / "emit"), str(csv), "--queue", queue, "--queue-type", kind, "-q"]
        return run_timed([*argv, "--log-dir", str(logs), *extra], self.env)

    def baseline_publish(self, mode: str, csv: Path, queue: str, kind: str) -> Finished:
        argv = [sys.executable, str(ROOT / "bench" / "baseline_publish.py"), mode, str(csv)]
        return run_timed(
            [*argv, "--url", self.url, "--queue", queue, "--queue-type", kind], self.env
        )

    def fill(self, queue: str, tasks: int, kind: str = "quorum") -> None:
        """Put `tasks` zero-dot tasks on a fresh queue, every one confirmed (by emit: the
        no-confirm baseline was seen to lose a few dozen of 10,000 when it closes)."""
        self.emit(self.csv(tasks), queue, kind)

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
        from bench.events import bench_events

        bench_events(self)

    # -- 6. peers: Dramatiq and Celery beside our worker (bench/peers.py) ------------------------
    def bench_peers(self) -> None:
        from bench.peers import bench_peers

        bench_peers(self)


def watch_done(log: Path, target: int, proc: subprocess.Popen[bytes], stall: float = 60) -> int:
    """Follow a worker's log until it has logged `target` done events; how many it had.

    The log rotates every 10 MB: when the file is replaced, the rest of the old one (now
    LOG.1) is read first.
    """
    done = 0
    pos = 0
    inode = None
    moved = time.monotonic()
    while done < target:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited after {done} tasks")
        if time.monotonic() - moved > stall:
            raise RuntimeError(f"the worker's log stopped at {done} done tasks")
        if log.exists():
            now = log.stat().st_ino
            if inode is not None and now != inode:
                done += _count_done(log.with_name(log.name + ".1"), pos)[0]
                pos = 0
            inode = now
            n, pos = _count_done(log, pos)
            if n:
                done += n
                moved = time.monotonic()
        if done < target:
            time.sleep(0.01)
    return done


def _count_done(path: Path, pos: int) -> tuple[int, int]:
    """Done events in whole lines from byte `pos` on, and where the last whole line ends."""
    with open(path, "rb") as f:
        f.seek(pos)
        chunk = f.read()
    cut = chunk.rfind(b"\n") + 1
    return chunk[:cut].count(b" event=done "), pos + cut


# -- the machine ----------------------------------------------------------------------------------
def machine(admin: Admin) -> dict[str, Any]:
    """Cores, CPU model, and the versions every figure depends on."""
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m[1] if m else ""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "rabbitmq": admin.server.get("version", "?"),
        "erlang": erlang_version(),
        "python": platform.python_version(),
        "pika": pika.__version__,
    }


def erlang_version() -> str:
    for path in sorted(Path("/usr/lib/erlang/releases").glob("*/OTP_VERSION")):
        return path.read_text().strip()
    return "?"


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


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
