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
from utils.task import H_ATTEMPT, H_REASON, DecodeError, Task, delivery_ids
from worker.handlers import Cancelled, Handler, TaskFailed

#: How often the loop wakes to pump heartbeats and look at stop requests, in seconds.
TICK = 0.2
#: Reconnect back-off: first delay, and the cap.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0


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
        self._deliveries: deque[Delivery] = deque()
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

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: warm stop (finish the task). Second: cold stop (give it back)."""
        self.stop_stage = min(2, self.stop_stage + 1)
        current = self._current.task_id if self._current else None
        if self.stop_stage == 1:
            self.log.event(
                "shutdown_warm",
                worker=self.opts.name,
                task=current,
                note="finishing the current task, then exiting; stop again to give it back"
                if current
                else "idle; exiting",
            )
        else:
            self._cancel.set()
            self.log.event(
                "shutdown_cold",
                worker=self.opts.name,
                task=current,
                note="giving the current task back to the queue" if current else "exiting",
            )

    def _should_exit(self, after_one_more: bool = False) -> bool:
        if self.stop_stage:
            return True
        n = self._settled + (1 if after_one_more else 0)
        return self.opts.max_tasks is not None and n >= self.opts.max_tasks

    # -- the outer loop: connect, consume, reconnect ----------------------------------------
    def run(self) -> Summary:
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
                    self.summary.stop = "stopped while reconnecting"
                    return self.summary
                continue
            if not first:
                self.log.event(
                    "reconnected", worker=self.opts.name, node=self._node, attempts=attempt
                )
            first, delay, attempt = False, BACKOFF_FIRST, 0
            try:
                self._consume()
                self._close()
                return self.summary
            except _Lost as lost:
                self._drop_connection()
                self._deliveries.clear()  # unacked: the broker gives them back
                self.log.event("connection_lost", worker=self.opts.name, reason=str(lost))
                if self.stop_stage == 2 or (self.stop_stage == 1 and self._current is None):
                    return self.summary

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.stop_stage:
                return True
            time.sleep(min(TICK, end - time.monotonic()))
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
        except broker.CONNECTION_ERRORS as exc:
            raise TaskToolError(broker.plain_reason(exc)) from None
        self._conn, self._channel = conn, channel
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

    def _pump(self, seconds: float) -> None:
        assert self._conn is not None
        try:
            self._conn.process_data_events(time_limit=seconds)
        except broker.CHANNEL_CLOSED_ERRORS as exc:
            raise _Lost(broker.plain_reason(exc)) from None
        except broker.CONNECTION_ERRORS as exc:
            raise _Lost(broker.plain_reason(exc) or type(exc).__name__) from None

    def _consume(self) -> None:
        idle_since = time.monotonic()
        while not self._should_exit():
            if self._deliveries:
                self._handle(self._deliveries.popleft())
                idle_since = time.monotonic()
                continue
            limit = TICK
            if self.opts.exit_when_idle is not None:
                left = idle_since + self.opts.exit_when_idle - time.monotonic()
                if left <= 0:
                    self.summary.stop = f"idle for {self.opts.exit_when_idle:g} s"
                    return
                limit = min(limit, left)
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
                "failed", worker=self.opts.name, task=tid, row=row, run=run, reason=str(exc)
            )
            self._dead_letter(tag, properties, body, str(exc), tid, row, run)
            return
        if method.redelivered:
            self.summary.redelivered += 1
        self._current = task
        self.log.event(
            "started",
            worker=self.opts.name,
            task=task.task_id,
            row=task.row,
            run=task.run_id,
            dots=task.dots,
            attempt=task.attempt,
            redelivered=bool(method.redelivered),
            body=shorten(task.body),
        )
        began = time.monotonic()
        outcome, detail = self._run(task)
        seconds = time.monotonic() - began
        self.summary.busy += seconds
        self._current = None
        if outcome == "cold":
            self._reject(tag, task)
            return
        if outcome == "done":
            self._settle(lambda: self._channel.basic_ack(tag), task)
            self.summary.done += 1
            self.log.event(
                "done",
                worker=self.opts.name,
                task=task.task_id,
                row=task.row,
                run=task.run_id,
                dots=task.dots,
                seconds=seconds,
                attempt=task.attempt,
                output=detail or None,
            )
            return
        self._failed(tag, properties, body, task, detail, seconds)

    def _run(self, task: Task) -> tuple[str, str]:
        """Run the handler in the helper thread, pumping heartbeats; (outcome, detail)."""
        self._cancel.clear()
        future = self._pool.submit(self.handler, task, self._cancel)
        deadline = time.monotonic() + self.opts.task_timeout if self.opts.task_timeout else None
        timed_out = False
        lost: _Lost | None = None
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
                return "failed", exc.reason + (f"; output: {exc.output}" if exc.output else "")
            except Exception as exc:  # the handler's own error: the task failed
                return "failed", f"{type(exc).__name__}: {exc}"
            if self.stop_stage == 2:
                self._cancel.set()
                self._abandon_if_stuck(future)
                return "cold", ""
            if deadline is not None and time.monotonic() > deadline and not timed_out:
                timed_out = True
                self._cancel.set()
                if self._abandon_if_stuck(future):
                    return "failed", f"timed out after {self.opts.task_timeout:g} s"
            if lost is None:
                try:
                    self._pump(0)
                except _Lost as exc:
                    # Finish the task all the same; its ack will fail and say so.
                    lost = exc

    def _abandon_if_stuck(self, future: cf.Future[str]) -> bool:
        """Give a handler that ignores cancel 2 s, then leave its thread behind."""
        try:
            future.result(timeout=2.0)
            return False
        except cf.TimeoutError:
            self._pool.shutdown(wait=False)
            self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="task")
            return True
        except Exception:
            return False

    def _settle(self, action: Any, task: Task | None = None, tid: str | None = None) -> None:
        """Ack, nack or reject one message; if it is our last, stop the consumer first."""
        try:
            if self._should_exit(after_one_more=True):
                self._cancel_consumer()
            action()
        except _SETTLE_ERRORS as exc:
            tid = task.task_id if task else tid
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
        except broker.CONNECTION_ERRORS as exc:
            raise _Lost(broker.plain_reason(exc)) from None

    def _reject(self, tag: int, task: Task) -> None:
        try:
            self._cancel_consumer()
            self._channel.basic_reject(tag, requeue=True)
            self.log.event(
                "requeued",
                worker=self.opts.name,
                task=task.task_id,
                row=task.row,
                run=task.run_id,
                reason="cold stop",
            )
        except _SETTLE_ERRORS:
            pass  # closing the connection gives it back all the same

    # -- failures, retries and dead letters -------------------------------------------------
    def _failed(
        self, tag: int, properties: Any, body: bytes, task: Task, reason: str, seconds: float
    ) -> None:
        self.summary.failed += 1
        self.log.event(
            "failed",
            worker=self.opts.name,
            task=task.task_id,
            row=task.row,
            run=task.run_id,
            attempt=task.attempt,
            seconds=seconds,
            reason=shorten(reason, 300),
        )
        if task.attempt >= self.opts.max_attempts:
            self._dead_letter(tag, properties, body, reason, task.task_id, task.row, task.run_id)
            return
        self.log.event(
            "retry",
            worker=self.opts.name,
            task=task.task_id,
            row=task.row,
            run=task.run_id,
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
            ch = self._conn.channel()
            if declare:
                ch.queue_declare(queue, durable=True)
            ch.confirm_delivery()
            props = pika.BasicProperties(
                delivery_mode=2,
                content_type=properties.content_type,
                content_encoding=properties.content_encoding,
                message_id=properties.message_id,
                timestamp=properties.timestamp,
                headers=headers,
            )
            ch.basic_publish("", queue, body, props, mandatory=True)
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
            try:
                if conn.is_open:
                    conn.close()
            except Exception:
                pass
