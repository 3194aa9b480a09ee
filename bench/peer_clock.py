"""The stopwatch the peers' no-op tasks carry in `make bench`: first task started, last ack.

A peer worker (bench/peer_dramatiq.py, bench/peer_celery.py) calls `CLOCK.started()` from
its task and `CLOCK.acked()` right after each ack; both append one line to the file named by
BENCH_PEER_CLOCK. Celery's prefork pool runs the task in a child process and acks in the
parent, so the two marks may come from two processes: the lines carry wall-clock time
(time.time(), as our worker's log lines do), which both processes share.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timing:
    """What a clock file says: when the first task started, when the last ack went, how many."""

    first: float
    last: float
    acks: int

    @property
    def seconds(self) -> float:
        return self.last - self.first


class Clock:
    """Marks the first task's start and the COUNT-th ack, once each, in a file."""

    def __init__(self, path: str | None, count: int) -> None:
        self.path = path
        self.count = count
        self._started = False
        self._acks = 0

    def started(self) -> None:
        """Called at the top of every task; only the first call in this process is written."""
        if not self._started:
            self._started = True
            self._write(f"first {time.time():.6f}")

    def acked(self) -> None:
        """Called after every ack; the COUNT-th is written."""
        self._acks += 1
        if self._acks == self.count:
            self._write(f"last {time.time():.6f} {self._acks}")

    def _write(self, line: str) -> None:
        if self.path:
            # One short O_APPEND write per line: the child's and the parent's never interleave.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def from_env() -> Clock:
    """The clock bench/peers.py configured through BENCH_PEER_CLOCK and BENCH_PEER_COUNT."""
    return Clock(os.environ.get("BENCH_PEER_CLOCK"), int(os.environ.get("BENCH_PEER_COUNT", "0")))


def read_clock(path: Path) -> Timing | None:
    """The timing in a clock file, or None until both the first start and the last ack are in.

    Only the earliest `first` counts: a worker that started a second process (Celery replacing
    a pool child) would write another.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    firsts: list[float] = []
    last: tuple[float, int] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "first":
            firsts.append(float(parts[1]))
        elif len(parts) == 3 and parts[0] == "last":
            last = (float(parts[1]), int(parts[2]))
    if not firsts or last is None:
        return None
    return Timing(first=min(firsts), last=last[0], acks=last[1])
