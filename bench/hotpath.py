"""The worker's own CPU per task, without a broker: `Worker._handle` and its log lines.

    python -m bench.hotpath [--tasks 50000] [--reps 5] [--batch 1] [--profile] [--no-handle]

Runs the worker's per-delivery code (decode, the two log lines, decide, settle, the write to
the log file) on zero-dot tasks as emit publishes them, with a stand-in consumer whose ack
does nothing (--batch 10: as if pika had read ten deliveries at a time, as at prefetch 10). What pika costs is left out: it is the same for the bare consumer, and
bench/gap.py measures the two together. Prints microseconds of CPU per task (median and
range of the repetitions), and with --profile the functions called per task. Instructions
per task, which do not depend on the machine's load, by difference under valgrind:

    valgrind --tool=cachegrind --cache-sim=no python -m bench.hotpath --reps 1 --tasks 2000
    (the same with --no-handle; the difference in "I refs", divided by 2,000)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from utils.eventlog.log import EventLog
from utils.settings import Settings
from utils.task import Task
from worker.handlers import DotSleep
from worker.loop import Worker, WorkerOptions


class _Method:
    """What pika hands over as the delivery's method frame (the fields the worker reads)."""

    def __init__(self, tag: int) -> None:
        self.delivery_tag = tag
        self.redelivered = False


class StandInConsumer:
    """A consumer whose ack, reject and cancel do nothing."""

    def __init__(self, buffered: int) -> None:
        #: Deliveries pika has read but the worker has not taken: only its length counts.
        self.deliveries = [None] * buffered

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Nothing: the broker's part is not measured here."""

    def reject(self, tag: int) -> None:
        """Nothing."""

    def cancel(self) -> None:
        """Nothing."""


def deliveries(n: int) -> list[tuple[Any, Any, bytes]]:
    """n deliveries of zero-dot tasks with emit's properties and headers."""
    run = "20261127T170244-385e"
    out = []
    for i in range(1, n + 1):
        task = Task.from_row(f"Task {i}", i, run, "rows.csv")
        out.append((_Method(i), task.properties(timestamp=1_800_000_000), task.encode()))
    return out


def one_rep(
    tmp: Path, n: int, batch: int, profile: cProfile.Profile | None = None, handle_them: bool = True
) -> float:
    """CPU seconds per task over n tasks, with a fresh worker and log file.

    `batch`: how many deliveries pika hands over at once (up to the prefetch).
    `handle_them` False: everything but the handling (for instruction counts by difference).
    """
    log = EventLog(tmp / f"worker-{time.monotonic_ns()}.log", echo=False)
    settings = Settings(queue="bench", queue_type="classic", log_dir=tmp)
    worker = Worker(settings, WorkerOptions(name="host-12345", prefetch=batch), DotSleep(0), log)
    # What is still buffered behind each delivery, as the worker sees it.
    behind = [StandInConsumer(batch - 1 - i % batch) for i in range(n)]
    todo: list[tuple[Any, Any]] = list(zip(behind, deliveries(n), strict=True))
    handle = worker._handle
    if profile:
        profile.enable()
    began = time.process_time()
    for consumer, d in todo if handle_them else ():
        handle(consumer, d)
    spent = time.process_time() - began
    if profile:
        profile.disable()
    log.close()
    return spent / n


def main() -> None:
    """Print the worker's CPU per task (and, with --profile, its calls per task)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1, help="deliveries at once (<= prefetch)")
    ap.add_argument("--profile", action="store_true", help="also print calls per task")
    ap.add_argument(
        "--no-handle",
        action="store_true",
        help="build the deliveries but handle none: under valgrind, the difference from a "
        "run without it is the instructions of --reps x --tasks handled tasks",
    )
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotpath-") as tmpdir:
        tmp = Path(tmpdir)
        one_rep(tmp, 1000, a.batch)  # warm up
        us = [
            one_rep(tmp, a.tasks, a.batch, handle_them=not a.no_handle) * 1e6 for _ in range(a.reps)
        ]
        print(
            f"Worker._handle: {statistics.median(us):.1f} us/task "
            f"({min(us):.1f}-{max(us):.1f}) over {a.reps} x {a.tasks:,} zero-dot tasks, "
            f"{a.batch} at a time"
        )
        if a.profile:
            prof = cProfile.Profile()
            one_rep(tmp, a.tasks, a.batch, prof)
            stats = pstats.Stats(prof)
            total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
            print(f"{total / a.tasks:.1f} calls per task; by own time:")
            stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
