"""`work` against the bare pika consumer, run by run: rate and CPU per task (bench/NOTES.md).

    python -m bench.gap [--tasks 5000] [--reps 5] [--prefetch 1 10] [--queue-type classic quorum]

For each queue type and prefetch, every repetition fills two fresh queues with zero-dot tasks
(by emit, confirmed), then drains one with bench/baseline_consume.py and the other with
`work --seconds-per-dot 0 -q --max-tasks N`, in turn (the order swaps each repetition, so a
burst of load elsewhere hits both alike). Rates are timed as `make bench` times them: ours
from the first `started` line to the last `done` line, the baseline from its first delivery
to its last ack. CPU per task: the worker's own CPU seconds from its `worker_ready` line to
its exit (from /proc and rusage), and the baseline's process time from its first delivery
to its last ack, each divided by the tasks. On a shared machine the CPU figures vary far
less than the rates. The broker is AMQP_URL, or the local node on BROKER_PORT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import BIN, ROOT, Admin, _wait4, cpu_seconds, run_timed, steady_rate
from bench.stats import rate


def fill(env: dict[str, str], tmp: Path, queue: str, tasks: int, kind: str) -> None:
    """A fresh queue of `tasks` zero-dot tasks ('Task 1', ...), every one confirmed."""
    csv = tmp / f"rows-{tasks}.csv"
    if not csv.exists():
        csv.write_text("".join(f"Task {i}\n" for i in range(1, tasks + 1)))
    argv = [str(BIN / "emit"), str(csv), "--queue", queue, "--queue-type", kind, "-q"]
    run_timed([*argv, "--log-dir", str(tmp / "emit-logs")], env)


def baseline(env: dict[str, str], url: str, queue: str, tasks: int, prefetch: int) -> dict:
    """The bare consumer: tasks per second, and its CPU microseconds per task."""
    argv = [sys.executable, str(ROOT / "bench" / "baseline_consume.py"), str(tasks)]
    f = run_timed([*argv, "--url", url, "--queue", queue, "--prefetch", str(prefetch)], env)
    got = json.loads(f.stdout.strip().splitlines()[-1])
    return {
        "rate": rate(got["messages"], got["seconds"]),
        "cpu_us": got["cpu"] / got["messages"] * 1e6,
    }


def ours(env: dict[str, str], tmp: Path, queue: str, tasks: int, prefetch: int) -> dict:
    """`work` until --max-tasks: tasks per second from its log, CPU microseconds per task."""
    logs = tmp / f"{queue}-logs"
    log = logs / "worker-w1.log"
    argv = [str(BIN / "work"), "--name", "w1", "--queue", queue, "-q", "--log-dir", str(logs)]
    argv += ["--seconds-per-dot", "0", "--prefetch", str(prefetch), "--max-tasks", str(tasks)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0 = None
    deadline = time.monotonic() + 60
    while cpu0 is None:
        if log.exists() and b" event=worker_ready " in log.read_bytes()[:4096]:
            cpu0 = cpu_seconds(proc.pid)
        elif proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker did not get ready")
        else:
            time.sleep(0.002)
    _, status, usage = _wait4(proc, 600)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the worker exited {os.waitstatus_to_exitcode(status)}")
    counted, seconds = steady_rate(logs)
    cpu = usage.ru_utime + usage.ru_stime - (cpu0 or 0.0)
    return {"rate": rate(counted, seconds), "cpu_us": cpu / tasks * 1e6}


def summary(values: list[float], fmt: str = "{:,.0f}") -> str:
    """'median (min-max)'."""
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    """Run the interleaved repetitions and print one summary per queue type and prefetch."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prefetch", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--queue-type", nargs="+", default=["classic", "quorum"])
    ap.add_argument("--json", type=Path, help="also write every run here")
    a = ap.parse_args()
    port = os.environ.get("BROKER_PORT", "5672")
    url = os.environ.get("AMQP_URL") or f"amqp://guest:guest@localhost:{port}/%2F"
    env = dict(os.environ, AMQP_URL=url, PYTHONUNBUFFERED="1")
    admin = Admin(url)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gap-") as tmpdir:
        tmp = Path(tmpdir)
        n = 0
        for kind in a.queue_type:
            for prefetch in a.prefetch:
                rows = []
                for rep in range(a.reps):
                    n += 1
                    qb, qo = f"gap-base-{n}", f"gap-ours-{n}"
                    fill(env, tmp, qb, a.tasks, kind)
                    fill(env, tmp, qo, a.tasks, kind)
                    first_ours = rep % 2 == 1
                    load = os.getloadavg()[0]
                    if first_ours:
                        o = ours(env, tmp, qo, a.tasks, prefetch)
                        b = baseline(env, url, qb, a.tasks, prefetch)
                    else:
                        b = baseline(env, url, qb, a.tasks, prefetch)
                        o = ours(env, tmp, qo, a.tasks, prefetch)
                    admin.delete(qb)
                    admin.delete(qo)
                    row = {
                        "queue_type": kind,
                        "prefetch": prefetch,
                        "rep": rep + 1,
                        "load": load,
                        "base": b,
                        "ours": o,
                        "ratio": o["rate"] / b["rate"],
                    }
                    rows.append(row)
                    runs.append(row)
                    print(
                        f"{kind:7} prefetch {prefetch:2} rep {rep + 1}: "
                        f"bare {b['rate']:7,.0f}/s {b['cpu_us']:5.0f} us/task | "
                        f"work {o['rate']:7,.0f}/s {o['cpu_us']:5.0f} us/task | "
                        f"{row['ratio']:.2f}x  (load {load:.1f})",
                        flush=True,
                    )
                print(
                    f"== {kind} prefetch {prefetch}: ratio "
                    f"{summary([r['ratio'] for r in rows], '{:.2f}')}x; "
                    f"bare {summary([r['base']['rate'] for r in rows])}/s, "
                    f"{summary([r['base']['cpu_us'] for r in rows])} us/task; "
                    f"work {summary([r['ours']['rate'] for r in rows])}/s, "
                    f"{summary([r['ours']['cpu_us'] for r in rows])} us/task",
                    flush=True,
                )
    admin.close()
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
