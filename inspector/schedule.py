"""What fair dispatch can do at best: greedy and LPT list schedules, and the lower bound."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Which worker (0-based) takes each task, and when the last one finishes."""

    assignment: tuple[int, ...]
    starts: tuple[float, ...]
    makespan: float


def greedy(durations: Sequence[float], workers: int) -> Schedule:
    """Prefetch-1 fair dispatch in the given order: each task goes to the first free worker.

    Ties go to the lower-numbered worker, as the broker's round robin over idle consumers
    would for workers that became free at the same moment.
    """
    if workers < 1:
        raise ValueError("need at least one worker")
    free = [(0.0, w) for w in range(workers)]
    heapq.heapify(free)
    assignment: list[int] = []
    starts: list[float] = []
    end = 0.0
    for d in durations:
        t, w = heapq.heappop(free)
        assignment.append(w)
        starts.append(t)
        heapq.heappush(free, (t + d, w))
        end = max(end, t + d)
    return Schedule(tuple(assignment), tuple(starts), end)


def round_robin(durations: Sequence[float], workers: int) -> float:
    """The makespan when task i goes to worker i mod N whatever the load (no prefetch limit)."""
    loads = [0.0] * workers
    for i, d in enumerate(durations):
        loads[i % workers] += d
    return max(loads) if durations else 0.0


def lpt(durations: Sequence[float], workers: int) -> Schedule:
    """The longest-processing-time-first schedule: greedy on tasks sorted longest first."""
    return greedy(sorted(durations, reverse=True), workers)


def lower_bound(durations: Sequence[float], workers: int) -> float:
    """No schedule beats max(total work / workers, longest task)."""
    if not durations:
        return 0.0
    return max(sum(durations) / workers, max(durations))
