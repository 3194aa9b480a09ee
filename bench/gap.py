"""`work` against the bare pika consumer, run by run: rate and CPU per task (bench/NOTES.md).

    python -m bench.gap [--tasks 5000] [--reps 5] [--prefetch 1 10] [--queue-type classic quorum]
                        [--before DIR] [--work-args '--no-fast-ack'] [--instructions]

For each queue type and prefetch, every repetition fills a fresh queue of zero-dot tasks (by
emit, confirmed) for each arm, and drains it: with bench/baseline_consume.py (bare), with
`work --seconds-per-dot 0 -q --max-tasks N` (work), and with --before, with `work` from
another source tree (before). The arms take turns going first, so that a burst of load
elsewhere hits them alike; the ratios are each repetition's rate over the bare consumer's.
Rates are timed as `make bench` times them: ours from the first `started` line to the last
`done` line, the baseline from its first delivery to its last ack. CPU per task: the
worker's own CPU seconds from its `worker_ready` line to its exit (from /proc and rusage:
its exit, some 30-45 ms, is in it), and the baseline's process time from its first
delivery to its last ack, each divided by the tasks. On a shared machine the CPU figures
vary far less than the rates. --instructions counts each arm's user-space instructions per
task under valgrind instead, which the load does not change. The broker is AMQP_URL, or the
local node on BROKER_PORT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BIN, ROOT, Admin, _wait4, cpu_seconds, run_timed, steady_rate
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


def ours(
    env: dict[str, str], tmp: Path, queue: str, tasks: int, prefetch: int, extra: list[str]
) -> dict:
    """`work` until --max-tasks: tasks per second from its log, CPU microseconds per task."""
    logs = tmp / f"{queue}-logs"
    log = logs / "worker-w1.log"
    argv = [str(BIN / "work"), "--name", "w1", "--queue", queue, "-q", "--log-dir", str(logs)]
    argv += ["--seconds-per-dot", "0", "--prefetch", str(prefetch), "--max-tasks", str(tasks)]
    proc = subprocess.Popen(
        [*argv, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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


def instructions(
    env: dict[str, str],
    admin: Admin,
    tmp: Path,
    kind: str,
    prefetch: int,
    arm: str,
    extra: list[str],
) -> float:
    """User-space instructions per task under valgrind: the difference of 1,200 and 200 tasks.

    They do not depend on the machine's load: what each process does, not how fast.
    """
    counts = []
    for n in (200, 1200):
        q = f"gap-instructions-{arm}-{n}"
        fill(env, tmp, q, n, kind)
        if arm == "bare":
            argv = [sys.executable, str(ROOT / "bench" / "baseline_consume.py"), str(n)]
            argv += ["--url", admin.url, "--queue", q, "--prefetch", str(prefetch)]
        else:
            argv = [sys.executable, str(BIN / "work"), "--queue", q, "-q"]
            argv += ["--log-dir", str(tmp / f"{q}-logs"), "--seconds-per-dot", "0"]
            argv += ["--prefetch", str(prefetch), "--max-tasks", str(n), *extra]
        vg = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        out = subprocess.run([*vg, *argv], env=env, capture_output=True, text=True, check=True)
        m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if not m:
            raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-1000:]}")
        counts.append(int(m[1].replace(",", "")))
        admin.delete(q)
    return (counts[1] - counts[0]) / 1000


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
    ap.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also run `work` from this source tree (e.g. `git archive REV | tar -x -C DIR`)",
    )
    ap.add_argument("--work-args", default="", help="extra options for work, e.g. '--no-fast-ack'")
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="instead: each arm's instructions per task under valgrind (cachegrind)",
    )
    a = ap.parse_args()
    port = os.environ.get("BROKER_PORT", "5672")
    url = os.environ.get("AMQP_URL") or f"amqp://guest:guest@localhost:{port}/%2F"
    env = dict(os.environ, AMQP_URL=url, PYTHONUNBUFFERED="1")
    # Each arm: a name, and the environment its `work` runs in (None: the bare consumer).
    arms: list[tuple[str, dict[str, str] | None]] = [("bare", None), ("work", env)]
    if a.before:
        arms.append(("before", dict(env, PYTHONPATH=str(a.before.resolve()))))
    extra = a.work_args.split()
    admin = Admin(url)
    if a.instructions:
        with tempfile.TemporaryDirectory(prefix="gap-") as tmpdir:
            for kind in a.queue_type:
                for prefetch in a.prefetch:
                    for name, arm_env in arms:
                        more = extra if name == "work" else []
                        per = instructions(
                            arm_env or env, admin, Path(tmpdir), kind, prefetch, name, more
                        )
                        print(f"{kind} prefetch {prefetch} {name}: {per:,.0f} instructions/task")
        admin.close()
        return
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gap-") as tmpdir:
        tmp = Path(tmpdir)
        n = 0
        for kind in a.queue_type:
            for prefetch in a.prefetch:
                rows = []
                for rep in range(a.reps):
                    n += 1
                    load = os.getloadavg()[0]
                    row: dict = {"queue_type": kind, "prefetch": prefetch, "rep": rep + 1}
                    # The order turns each repetition, so that no arm always goes first.
                    turn = rep % len(arms)
                    for name, arm_env in arms[turn:] + arms[:turn]:
                        q = f"gap-{name}-{n}"
                        fill(env, tmp, q, a.tasks, kind)
                        if arm_env is None:
                            row[name] = baseline(env, url, q, a.tasks, prefetch)
                        else:
                            more = extra if name == "work" else []
                            row[name] = ours(arm_env, tmp, q, a.tasks, prefetch, more)
                        admin.delete(q)
                    row["load"] = load
                    for name, _env in arms[1:]:
                        row[f"{name}_ratio"] = row[name]["rate"] / row["bare"]["rate"]
                    rows.append(row)
                    runs.append(row)
                    print(
                        f"{kind:7} prefetch {prefetch:2} rep {rep + 1}: "
                        + " | ".join(
                            f"{name} {row[name]['rate']:7,.0f}/s {row[name]['cpu_us']:4.0f} us"
                            + (f" {row[f'{name}_ratio']:.2f}x" if name != "bare" else "")
                            for name, _env in arms
                        )
                        + f"  (load {load:.1f})",
                        flush=True,
                    )
                print(
                    f"== {kind} prefetch {prefetch}: "
                    + "; ".join(
                        f"{name} {summary([r[name]['rate'] for r in rows])}/s, "
                        f"{summary([r[name]['cpu_us'] for r in rows])} us/task"
                        + (
                            f", {summary([r[f'{name}_ratio'] for r in rows], '{:.2f}')}x"
                            if name != "bare"
                            else ""
                        )
                        for name, _env in arms
                    ),
                    flush=True,
                )
    admin.close()
    if a.json:
        a.json.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
