"""The consume loop: fair dispatch (prefetch 1), work in a thread, ack after the work.

The task runs in a helper thread while this thread keeps pika's connection alive
(heartbeats) by pumping its events, so a task may take far longer than the heartbeat
timeout. All pika calls happen on this thread; acks are sent only once the work is done.
"""

from __future__ import annotations

import concurrent.futures as cf
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pika

from utils import broker
from utils.errors import AccessRefused, QueueMismatch, TaskToolError
from utils.logformat import EventLog, shorten
from utils.settings import Settings, url_host
from utils.task import H_ATTEMPT, H_REASON, DecodeError, Task, copy_properties, delivery_ids
from worker.handlers import Cancelled, Handler, TaskFailed

#: How often the loop wakes to pump heartbeats and look at stop requests, in seconds.
TICK = 0.2
#: Reconnect back-off: first delay, and the cap.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
#: A connection that lasted this long resets the back-off; one lost sooner does not.
STABLE_AFTER = 10.0
#: How many finished-but-unacked task ids a worker remembers.
DONE_UNACKED_MAX = 1000


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker behaves."""

    name: str
    prefetch: int = 1
    max_tasks: int | None = None
    exit_when_idle: float | None = None
    heartbeat: int | None = None
    task_timeout: float | None = None
    max_attempts: int = 3


@dataclass
class Summary:
    """What a worker did, printed when it exits."""

    done: int = 0
    failed: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    busy: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    stop: str = "finished"

    def line(self, name: str) -> str:
        idle = max(0.0, time.monotonic() - self.started_at - self.busy)
        return (
            f"worker {name}: {self.done} done, {self.failed} failed, "
            f"{self.dead_lettered} dead-lettered, {self.redelivered} redelivered, "
            f"busy {self.busy:.1f} s, idle {idle:.1f} s ({self.stop})"
        )


class _Lost(Exception):
    """The connection or channel went away; the reason is in plain words."""


Delivery = tuple[Any, Any, bytes]  # method, properties, body
_SETTLE_ERRORS: tuple[type[BaseException], ...] = (*broker.LOST_ERRORS, _Lost)


class Worker:
    """One worker process: consume, run, ack; survive what can be survived."""

    def __init__(self, settings: Settings, opts: WorkerOptions, handler: Handler, log: EventLog):
        self.settings = settings
        self.opts = opts
        self.handler = handler
        self.log = log
        self.summary = Summary()
        self.stop_stage = 0  # 0 running, 1 warm stop, 2 cold stop
        self._announced = 0  # the stop stages already logged
        self._lost_logged = False  # connection_lost already logged for this connection
        #: Tasks that finished but whose ack was lost: a redelivered copy is acked at once
        #: instead of being run again (bounded; oldest forgotten first).
        self._done_unacked: dict[str, None] = {}
        self._deliveries: deque[Delivery] = deque()
        self._broker_cancelled = False  # set when the broker cancels our consumer
        self._cancel = threading.Event()
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="task")
        self._current: Task | None = None
        self._last_activity = time.monotonic()
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._consumer_tag: str | None = None
        self._dead_declared = False
        self._settled = 0  # messages acked, requeued for retry, or dead-lettered
        self.queue_type = settings.queue_type
        self._instant = getattr(handler, "is_instant", None)

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: warm stop (finish the task). Second: cold stop (give it back).

        Called from a signal handler, so it only sets the stage; the loop, awake every
        TICK, says so in the log (printing from a signal handler can interrupt a print).
        """
        self.stop_stage = min(2, self.stop_stage + 1)

    def _announce_stop(self) -> None:
        """Log each stop stage once, and cancel the task on a cold stop."""
        while self._announced < self.stop_stage:
            self._announced += 1
            task = self._current
            ids = _ids(task)
            if self._announced == 1:
                note = (
                    "warm stop (1 of 2): finishing the current task, then exiting; "
                    "stop again to give it back to the queue"
                    if task
                    else "warm stop (1 of 2): idle, exiting"
                )
                self.log.event("shutdown_warm", worker=self.opts.name, **ids, note=note)
            else:
                self._cancel.set()
                note = (
                    "cold stop (2 of 2): giving the current task back to the queue, exiting"
                    if task
                    else "cold stop (2 of 2): exiting"
                )
                self.log.event("shutdown_cold", worker=self.opts.name, **ids, note=note)

    def _should_exit(self, after_one_more: bool = False) -> bool:
        if self.stop_stage:
            return True
        n = self._settled + (1 if after_one_more else 0)
        return self.opts.max_tasks is not None and n >= self.opts.max_tasks

    # -- the outer loop: connect, consume, reconnect ----------------------------------------
    def run(self) -> Summary:
        """Consume until stopped, reconnecting with capped, jittered back-off when the broker goes."""
        delay = BACKOFF_FIRST
        first = True
        attempt = 0
        while True:
            try:
                self._connect(first)
            except (AccessRefused, QueueMismatch):
                raise
            except TaskToolError as exc:
                if first:
                    raise
                attempt += 1
                wait = min(BACKOFF_CAP, delay) * (0.5 + random.random() / 2)
                self.log.event(
                    "reconnect_failed",
                    worker=self.opts.name,
                    attempt=attempt,
                    reason=exc.message,
                    retry_in=f"{wait:.1f}s",
                )
                delay = min(BACKOFF_CAP, delay * 2)
                if self._sleep_unless_stopped(wait):
                    self.summary.stop = self._stop_text("while reconnecting")
                    return self.summary
                continue
            if not first:
                self.log.event(
                    "reconnected",
                    worker=self.opts.name,
                    node=self._node,
                    attempts=attempt + 1,
                    note="connection restored; consuming again",
                )
            first, attempt = False, 0
            connected_at = time.monotonic()
            try:
                self._consume()
                self._close()
                return self.summary
            except _Lost as lost:
                self._drop_connection()
                self._deliveries.clear()  # unacked: the broker gives them back
                self._log_lost(str(lost))
                self._lost_logged = False
                if self.stop_stage:
                    self.summary.stop = self._stop_text("after the connection was lost")
                    return self.summary
                if time.monotonic() - connected_at > STABLE_AFTER:
                    delay = BACKOFF_FIRST
                    continue
                # Lost soon after connecting (a broker that keeps closing us, say): back
                # off as for a failed connect, so that nothing spins.
                wait = min(BACKOFF_CAP, delay) * (0.5 + random.random() / 2)
                delay = min(BACKOFF_CAP, delay * 2)
                if self._sleep_unless_stopped(wait):
                    self.summary.stop = self._stop_text("while reconnecting")
                    return self.summary

    def _stop_text(self, when: str) -> str:
        if self.stop_stage == 2:
            return f"cold stop {when}"
        if self.stop_stage == 1:
            return f"warm stop {when}"
        return when

    def _log_lost(self, reason: str, task: Task | None = None) -> None:
        """Say once per connection, in plain words, that it is gone and what happens next."""
        if self._lost_logged:
            return
        self._lost_logged = True
        note = (
            "finishing the task; its ack will be lost, so the broker will redeliver it"
            if task
            else "reconnecting"
        )
        self.log.event(
            "connection_lost", worker=self.opts.name, **_ids(task), reason=reason, note=note
        )

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._announce_stop()
            if self.stop_stage:
                return True
            time.sleep(max(0.0, min(TICK, end - time.monotonic())))
        self._announce_stop()
        return bool(self.stop_stage)

    def _connect(self, first: bool) -> None:
        conn, url = broker.connect(
            self.settings, heartbeat=self.opts.heartbeat, client_name=f"work {self.opts.name}"
        )
        self._node = url_host(url)
        try:
            channel, info = broker.declare_queue(conn, self.settings)
            channel.basic_qos(prefetch_count=self.opts.prefetch)
            self._consumer_tag = channel.basic_consume(self.settings.queue, self._on_delivery)
            # The broker cancels our consumer when the queue is deleted (or its node is
            # lost); without this we would wait for deliveries that can never come.
            self._broker_cancelled = False
            channel.add_on_cancel_callback(self._on_broker_cancel)
        except broker.CONNECTION_ERRORS as exc:
            _close_quietly(conn)
            raise TaskToolError(broker.plain_reason(exc)) from None
        except TaskToolError:
            _close_quietly(conn)
            raise
        self._conn, self._channel = conn, channel
        self._arm_wake(conn)
        self._dead_declared = False  # the dead-letter queue may have gone with the broker
        self.queue_type = info.queue_type
        if first:
            self.log.event(
                "worker_ready",
                worker=self.opts.name,
                queue=self.settings.queue,
                queue_type=info.queue_type,
                prefetch=self.opts.prefetch,
                node=self._node,
                note=info.note or None,
            )

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._deliveries.append((method, properties, body))

    def _arm_wake(self, conn: Any) -> None:
        """Wake the loop every TICK on this connection, for as long as it is ours.

        With this timer in place, waiting for a delivery needs no time limit, which spares
        pika a timer per wait (a measurable share of a very short task's cost).
        """

        def wake() -> None:
            ours = self._conn is conn  # a later connection arms its own timer
            if ours and conn.is_open:
                conn.call_later(TICK, wake)

        conn.call_later(TICK, wake)

    def _on_broker_cancel(self, frame: Any) -> None:
        self._broker_cancelled = True

    def _pump(self, seconds: float | None) -> None:
        """Process broker events: for up to `seconds`, or (None) until the next event or TICK."""
        assert self._conn is not None
        try:
            self._conn.process_data_events(time_limit=seconds)
        except broker.CHANNEL_CLOSED_ERRORS as exc:
            raise _Lost("the broker closed the channel: " + broker.plain_reason(exc)) from None
        except broker.CONNECTION_ERRORS as exc:
            raise _Lost(broker.plain_reason(exc) or type(exc).__name__) from None
        if self._broker_cancelled:
            raise _Lost(
                "the broker cancelled our consumer: the queue was deleted, or the node "
                "holding it went away; declaring it again"
            )

    def _consume(self) -> None:
        idle_since = time.monotonic()
        while True:
            self._announce_stop()
            if self._should_exit():
                break
            if self._deliveries:
                self._handle(self._deliveries.popleft())
                idle_since = time.monotonic()
                continue
            limit: float | None = None  # the wake timer ends the wait within TICK
            if self.opts.exit_when_idle is not None:
                left = idle_since + self.opts.exit_when_idle - time.monotonic()
                if left <= 0:
                    self.summary.stop = f"idle for {self.opts.exit_when_idle:g} s"
                    return
                limit = left if left < TICK else None
            self._pump(limit)
        if self.stop_stage == 2:
            self.summary.stop = "cold stop"
        elif self.stop_stage == 1:
            self.summary.stop = "warm stop"
        else:
            self.summary.stop = f"max tasks ({self.opts.max_tasks}) reached"

    # -- one task -----------------------------------------------------------------------------
    def _handle(self, delivery: Delivery) -> None:
        method, properties, body = delivery
        tag = method.delivery_tag
        try:
            task = Task.decode(properties, body)
        except DecodeError as exc:
            tid, row, run = delivery_ids(properties, body)
            self.log.event(
                "failed",
                worker=self.opts.name,
                task=tid,
                row=row,
                run=run,
                reason=f"poison message: {exc}",
            )
            self._dead_letter(tag, properties, body, str(exc), tid, row, run)
            return
        if method.redelivered:
            self.summary.redelivered += 1
        log = self.log
        ids = {"task": task.task_id, "row": task.row, "run": task.run_id}
        # A task that takes no time has its two lines written once its ack is sent (see
        # EventLog.defer); any other line, ack_lost included, writes them first, in order.
        instant = self._instant is not None and self._instant(task)
        emit = log.defer if instant else log.event
        emit(
            "started",
            worker=self.opts.name,
            **ids,
            dots=task.dots,
            attempt=task.attempt,
            redelivered=bool(method.redelivered),
            body=shorten(task.body),
        )
        if method.redelivered and task.task_id in self._done_unacked:
            # We finished this very task, then lost its ack (e.g. the broker's
            # consumer_timeout closed the channel): ack the copy instead of running it again,
            # which for a task longer than consumer_timeout would loop forever.
            del self._done_unacked[task.task_id]
            self.summary.done += 1
            log.event(
                "done",
                worker=self.opts.name,
                **ids,
                seconds=0.0,
                attempt=task.attempt,
                note="finished earlier, but its ack was lost; acked this copy without running it again",
            )
            self._settle(lambda: self._channel.basic_ack(tag), task)
            return
        self._current = task
        began = time.monotonic()
        # Nothing to do for an instant task: no thread hop, which would cost more than it.
        outcome, detail = ("done", "") if instant else self._run(task)
        seconds = time.monotonic() - began
        self.summary.busy += seconds
        self._current = None
        if outcome == "cold":
            self._reject(tag, task)
            return
        if outcome == "done":
            self.summary.done += 1
            emit(
                "done",
                worker=self.opts.name,
                **ids,
                dots=task.dots,
                seconds=seconds,
                attempt=task.attempt,
                output=detail.strip() or None,
            )
            self._settle(lambda: self._channel.basic_ack(tag), task, finished=True)
            log.flush()
            return
        self._failed(tag, properties, body, task, detail, seconds)

    def _run(self, task: Task) -> tuple[str, str]:
        """Run the handler, pumping heartbeats while it works; (outcome, detail)."""
        self._cancel.clear()
        future = self._pool.submit(self.handler, task, self._cancel)
        deadline = time.monotonic() + self.opts.task_timeout if self.opts.task_timeout else None
        timed_out = False
        lost = False
        while True:
            try:
                output = future.result(timeout=TICK)
                return "done", output or ""
            except cf.TimeoutError:
                pass
            except Cancelled:
                if self.stop_stage == 2:
                    return "cold", ""
                if timed_out:
                    return "failed", f"timed out after {self.opts.task_timeout:g} s"
                return "failed", "cancelled"
            except TaskFailed as exc:
                out = exc.output.strip()
                return "failed", exc.reason + (f"; output: {out}" if out else "")
            except Exception as exc:  # the handler's own error: the task failed
                return "failed", f"{type(exc).__name__}: {exc}"
            self._announce_stop()
            if self.stop_stage == 2:
                self._cancel.set()
                self._abandon_if_stuck(future, lost)
                return "cold", ""
            if deadline is not None and time.monotonic() > deadline and not timed_out:
                timed_out = True
                self._cancel.set()
                if self._abandon_if_stuck(future, lost):
                    return "failed", f"timed out after {self.opts.task_timeout:g} s"
            if not lost:
                try:
                    self._pump(0)
                except _Lost as exc:
                    # Finish the task all the same; its ack will fail and say so.
                    lost = True
                    self._log_lost(str(exc), task)

    def _abandon_if_stuck(self, future: cf.Future[str], lost: bool) -> bool:
        """Give a handler that ignores cancel 2 s (pumping meanwhile), then leave it behind."""
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            if future.done():
                return False
            if not lost:
                try:
                    self._pump(TICK / 2)
                    continue
                except _Lost as exc:
                    lost = True
                    self._log_lost(str(exc), self._current)
            time.sleep(TICK / 2)
        if future.done():
            return False
        self._pool.shutdown(wait=False)
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="task")
        return True

    def _settle(
        self,
        action: Any,
        task: Task | None = None,
        tid: str | None = None,
        finished: bool = False,
    ) -> None:
        """Ack, nack or reject one message; if it is our last, stop the consumer first.

        `finished`: the task's work is done, so if the ack is lost we remember its id and
        ack a redelivered copy without running it again.
        """
        try:
            if self._conn is None or not self._conn.is_open or not self._channel.is_open:
                raise _Lost("the channel was already closed")
            if self._should_exit(after_one_more=True):
                self._cancel_consumer()
            action()
        except _SETTLE_ERRORS as exc:
            tid = task.task_id if task else tid
            if finished and tid is not None:
                self._done_unacked[tid] = None
                while len(self._done_unacked) > DONE_UNACKED_MAX:
                    del self._done_unacked[next(iter(self._done_unacked))]
            self.log.event(
                "ack_lost",
                worker=self.opts.name,
                task=tid,
                row=task.row if task else None,
                run=task.run_id if task else None,
                note=f"ack lost; the broker will redeliver task {tid}",
            )
            raise _Lost(str(exc) if isinstance(exc, _Lost) else broker.plain_reason(exc)) from None
        self._settled += 1

    def _cancel_consumer(self) -> None:
        if self._consumer_tag is None:
            return
        tag, self._consumer_tag = self._consumer_tag, None
        try:
            leftovers = self._channel.basic_cancel(tag)
            for _ch, method, _props, _body in leftovers or ():
                self._channel.basic_nack(method.delivery_tag, requeue=True)
            for method, _props, _body in self._deliveries:
                self._channel.basic_nack(method.delivery_tag, requeue=True)
            self._deliveries.clear()
        except broker.LOST_ERRORS as exc:
            raise _Lost(broker.plain_reason(exc)) from None

    def _reject(self, tag: int, task: Task) -> None:
        try:
            self._cancel_consumer()
            self._channel.basic_reject(tag, requeue=True)
        except _SETTLE_ERRORS:
            pass  # closing the connection gives it back all the same
        self.log.event(
            "requeued",
            worker=self.opts.name,
            **_ids(task),
            reason="cold stop",
            note="gave the task back to the queue unfinished; another worker will do it",
        )

    # -- failures, retries and dead letters -------------------------------------------------
    def _failed(
        self, tag: int, properties: Any, body: bytes, task: Task, reason: str, seconds: float
    ) -> None:
        self.summary.failed += 1
        self.log.event(
            "failed",
            worker=self.opts.name,
            **_ids(task),
            attempt=task.attempt,
            of=self.opts.max_attempts,
            seconds=seconds,
            reason=shorten(reason, 300),
        )
        if task.attempt >= self.opts.max_attempts:
            reason = f"failed {task.attempt} times; last: {reason}"
            self._dead_letter(tag, properties, body, reason, task.task_id, task.row, task.run_id)
            return
        self.log.event(
            "retry",
            worker=self.opts.name,
            **_ids(task),
            attempt=task.attempt + 1,
            of=self.opts.max_attempts,
        )
        if self.queue_type == "quorum":
            # The quorum queue counts deliveries itself (x-delivery-count).
            self._settle(lambda: self._channel.basic_nack(tag, requeue=True), task)
            return
        headers = dict(properties.headers or {})
        headers[H_ATTEMPT] = task.attempt + 1
        self._publish_confirmed(self.settings.queue, body, properties, headers)
        self._settle(lambda: self._channel.basic_ack(tag), task)

    def _dead_letter(
        self, tag: int, properties: Any, body: bytes, reason: str, tid: str, row: Any, run: Any
    ) -> None:
        dead = f"{self.settings.queue}.dead"
        headers = dict(properties.headers or {})
        headers[H_REASON] = shorten(reason, 500)
        self._publish_confirmed(dead, body, properties, headers, declare=not self._dead_declared)
        self._dead_declared = True
        self._settle(lambda: self._channel.basic_ack(tag), tid=tid)
        self.summary.dead_lettered += 1
        self.log.event(
            "dead_lettered",
            worker=self.opts.name,
            task=tid,
            row=row,
            run=run,
            queue=dead,
            reason=shorten(reason, 300),
            note=f"moved to {dead}; 'tasks dead' lists it, 'tasks dead --requeue' retries it",
        )

    def _publish_confirmed(
        self,
        queue: str,
        body: bytes,
        properties: Any,
        headers: dict[str, Any],
        declare: bool = False,
    ) -> None:
        """Publish a copy on a confirm channel, so the original is acked only once it is safe."""
        assert self._conn is not None
        try:
            if declare:
                broker.ensure_queue(self._conn, queue)
            ch = self._conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", queue, body, copy_properties(properties, headers), mandatory=True)
            ch.close()
        except broker.LOST_ERRORS + broker.PUBLISH_ERRORS as exc:
            raise _Lost(broker.plain_reason(exc)) from None

    # -- closing ----------------------------------------------------------------------------
    def _close(self) -> None:
        try:
            if self._consumer_tag is not None:
                self._cancel_consumer()
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except _SETTLE_ERRORS:
            pass
        self._conn = None
        self._pool.shutdown(wait=False)

    def _drop_connection(self) -> None:
        conn, self._conn, self._consumer_tag = self._conn, None, None
        if conn is not None:
            _close_quietly(conn)


def _ids(task: Task | None) -> dict[str, Any]:
    """The task, row and run fields every event about a task carries."""
    if task is None:
        return {}
    return {"task": task.task_id, "row": task.row, "run": task.run_id}


def _close_quietly(conn: Any) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass  # it is going away anyway; nothing of ours is left on it
