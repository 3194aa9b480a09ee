"""Running one task's handler in a helper thread while the connection's heartbeats flow.

All pika calls stay on the worker's main thread: while the handler works, that thread
pumps the connection every TICK, so a task may take far longer than the heartbeat timeout.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable

from utils.errors import ConnectionLost
from utils.task import Task
from worker.consumer import Consumer
from worker.handlers import Cancelled, Handler, TaskFailed
from worker.results import Job
from worker.settle import Outcome
from worker.stop import TICK, TwoStageStop

#: How long a handler that ignores cancellation gets before it is left behind, in seconds.
ABANDON_AFTER = 2.0


class TaskRunner:
    """Runs a handler in a helper thread: the outcome, while the caller's connection lives on."""

    def __init__(
        self,
        handler: Handler,
        task_timeout: float | None,
        stop: TwoStageStop,
        on_lost: Callable[[ConnectionLost, Task], None],
    ) -> None:
        self.handler = handler
        self.task_timeout = task_timeout
        self.stop = stop
        self.cancel: threading.Event = stop.cancel
        #: Called once the connection is lost mid-task: the task goes on (its ack will fail),
        #: unless the broker took it back (consumer_timeout), which stops it.
        self.on_lost = on_lost
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="task")
        #: The last attempt's --exec record (worker/results.py), or None.
        self.job: Job | None = None

    def run(self, task: Task, consumer: Consumer) -> tuple[Outcome, str]:
        """Run the handler, pumping heartbeats while it works; (outcome, output or reason)."""
        consumer.in_hand = time.monotonic()  # a broker's cancel now may be a consumer_timeout
        try:
            return self._run(task, consumer)
        finally:
            consumer.in_hand = None

    def _run(self, task: Task, consumer: Consumer) -> tuple[Outcome, str]:
        self.cancel.clear()
        self.job = None
        future = self._pool.submit(self.handler, task, self.cancel)
        deadline = time.monotonic() + self.task_timeout if self.task_timeout else None
        timed_out = False
        lost = False
        taken_back = ""  # the broker's words, once it took the task back (consumer_timeout)
        while True:
            try:
                output = future.result(timeout=TICK)
                self.job = getattr(output, "job", None)
                return Outcome.DONE, output or ""
            except cf.TimeoutError:
                pass
            except Cancelled as exc:
                self.job = exc.job
                if taken_back:
                    return Outcome.TAKEN_BACK, taken_back
                if self.stop.stage == 2:
                    return Outcome.COLD_STOP, ""
                if timed_out:
                    return Outcome.FAILED, f"timed out after {self.task_timeout:g} s"
                return Outcome.FAILED, "cancelled"
            except TaskFailed as exc:
                self.job = exc.job
                if taken_back:  # it failed as it was being stopped: not an attempt of its own
                    return Outcome.TAKEN_BACK, taken_back
                out = exc.output.strip()
                return Outcome.FAILED, exc.reason + (f"; output: {out}" if out else "")
            except Exception as exc:  # the handler's own error: the task failed
                if taken_back:
                    return Outcome.TAKEN_BACK, taken_back
                return Outcome.FAILED, f"{type(exc).__name__}: {exc}"
            self.stop.announce(task)
            if self.stop.stage == 2:
                self.cancel.set()
                self._abandon_if_stuck(future, task, consumer, lost)
                return Outcome.COLD_STOP, ""
            if deadline is not None and time.monotonic() > deadline and not timed_out:
                timed_out = True
                self.cancel.set()
                if self._abandon_if_stuck(future, task, consumer, lost):
                    return Outcome.FAILED, f"timed out after {self.task_timeout:g} s"
            if not lost:
                try:
                    consumer.pump(0)
                except ConnectionLost as exc:
                    lost = True
                    self.on_lost(exc, task)
                    if exc.consumer_timeout is not None:
                        # The broker has put the task back in the queue, where another
                        # worker may take it now: stop it, as a cold stop would, rather than
                        # run it twice at once, with an ack that can only fail
                        # (docs/WORKER.md). It comes back with its attempt counted.
                        taken_back = exc.message
                        self.cancel.set()
                        if self._abandon_if_stuck(future, task, consumer, lost):
                            return Outcome.TAKEN_BACK, taken_back
                    # Otherwise finish the task all the same; its ack will fail and say so.

    def _abandon_if_stuck(
        self, future: cf.Future[str], task: Task, consumer: Consumer, lost: bool
    ) -> bool:
        """Give a handler that ignores cancel ABANDON_AFTER s (pumping), then leave it behind."""
        end = time.monotonic() + ABANDON_AFTER
        while time.monotonic() < end:
            if future.done():
                return False
            if not lost:
                try:
                    consumer.pump(TICK / 2)
                    continue
                except ConnectionLost as exc:
                    lost = True
                    self.on_lost(exc, task)
            time.sleep(TICK / 2)
        if future.done():
            return False
        self._pool.shutdown(wait=False)
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="task")
        return True

    def shutdown(self) -> None:
        """Let the helper thread go (a handler left behind is not waited for)."""
        self._pool.shutdown(wait=False)
