"""The two-stage stop: the first signal finishes the task, the second gives it back.

A signal handler only moves the stage on; the loop, awake at least every TICK, says so
in the log and acts on it (printing from a signal handler can interrupt a print).
"""

from __future__ import annotations

import threading
import time

from utils.eventlog.log import EventLog
from utils.eventlog.schema import SHUTDOWN_COLD, SHUTDOWN_WARM
from utils.task import Task

#: How often the worker wakes to pump heartbeats and look at stop requests, in seconds.
TICK = 0.2


class TwoStageStop:
    """Where the worker is in stopping: 0 running, 1 warm stop, 2 cold stop."""

    def __init__(self, log: EventLog, worker: str, cancel: threading.Event) -> None:
        self.log = log
        self.worker = worker
        #: Set on a cold stop, so that the running handler gives up.
        self.cancel = cancel
        self.stage = 0
        self._announced = 0  # the stages already logged

    def request(self) -> None:
        """First call: warm stop (finish the task). Second: cold stop (give it back)."""
        self.stage = min(2, self.stage + 1)

    def announce(self, task: Task | None) -> None:
        """Log each stage once, with the task in hand, and cancel the task on a cold stop."""
        while self._announced < self.stage:
            self._announced += 1
            ids = task.ids() if task else {}
            if self._announced == 1:
                note = (
                    "warm stop (1 of 2): finishing the current task, then exiting; "
                    "stop again to give it back to the queue"
                    if task
                    else "warm stop (1 of 2): idle, exiting"
                )
                self.log.event(SHUTDOWN_WARM, worker=self.worker, **ids, note=note)
            else:
                self.cancel.set()
                note = (
                    "cold stop (2 of 2): giving the current task back to the queue, exiting"
                    if task
                    else "cold stop (2 of 2): exiting"
                )
                self.log.event(SHUTDOWN_COLD, worker=self.worker, **ids, note=note)

    def describe(self, when: str) -> str:
        """How the worker stopped, for its summary line: e.g. "warm stop while reconnecting"."""
        if self.stage == 2:
            return f"cold stop {when}"
        if self.stage == 1:
            return f"warm stop {when}"
        return when

    def sleep(self, seconds: float) -> bool:
        """Sleep, unless a stop comes first; True if it did (between tasks only)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.announce(None)
            if self.stage:
                return True
            time.sleep(max(0.0, min(TICK, end - time.monotonic())))
        self.announce(None)
        return bool(self.stage)
