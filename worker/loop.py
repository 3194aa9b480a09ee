"""The worker's outer loop: connect, take one delivery at a time, reconnect when the broker goes.

Fair dispatch (prefetch 1) and ack after the work: each delivery is decoded, run
(worker/running.py) and settled (worker/settle.py). A connection lost at any point is
said plainly, and the worker connects again with capped, jittered back-off.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from utils import rabbitmq
from utils.errors import (
    AccessRefused,
    BrokerUnavailable,
    ConnectionLost,
    PublishRefused,
    QueueMismatch,
    TaskToolError,
)
from utils.eventlog import schema as ev
from utils.eventlog.format import shorten
from utils.eventlog.log import EventLog
from utils.settings import Settings, url_host
from utils.task import DecodeError, Task, broker_count, delivery_ids
from worker.consumer import Consumer, consume
from worker.handlers import Handler
from worker.running import TaskRunner
from worker.settle import (
    ARRIVED,
    DONE,
    DONE_EARLIER,
    FAILED,
    POISON,
    REDELIVERED,
    RUN,
    Settler,
    WorkerTally,
    acks_before_lines,
    decide,
    deferred_after_ack,
)
from worker.stop import TICK, TwoStageStop

#: How often a first connection that the broker closed while we set up is tried.
FIRST_TRIES = 4
#: Reconnect back-off: first delay, and the cap, in seconds.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
#: A connection that lasted this long resets the back-off; one lost sooner does not.
STABLE_AFTER = 10.0


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
    fast_ack: bool = True  # worker/fastack.py; False (WORK_FAST_ACK=0): basic_ack only


class Worker:
    """One worker process: consume, run, settle; survive what can be survived."""

    def __init__(self, settings: Settings, opts: WorkerOptions, handler: Handler, log: EventLog):
        self.settings = settings
        self.opts = opts
        self.log = log
        self.tally = WorkerTally()
        self._stop = TwoStageStop(log, opts.name, threading.Event())
        self._runner = TaskRunner(handler, opts.task_timeout, self._stop, self._lost_mid_task)
        self._settler = Settler(settings.queue, opts.name, opts.max_attempts, log, self.tally)
        self._instant = getattr(handler, "is_instant", None)
        self._lost_logged = False  # connection_lost already logged for this connection
        self._node = ""
        self._queue: rabbitmq.QueueInfo | None = None  # what the first connect found of it
        self.queue_type = settings.queue_type

    @property
    def stop_stage(self) -> int:
        """0 running, 1 warm stop, 2 cold stop."""
        return self._stop.stage

    def request_stop(self) -> None:
        """First call: warm stop (finish the task). Second: cold stop (give it back).

        Safe in a signal handler: it only moves the stage on. A reconnect that waits on a
        broker that does not answer ends within rabbitmq.internals.ANSWER_WITHIN, then sees the stop.
        """
        self._stop.request()

    # -- connect, consume, reconnect ----------------------------------------------------------
    def run(self) -> WorkerTally:
        """Consume until stopped; reconnect with capped, jittered back-off when the broker goes."""
        backoff = rabbitmq.Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        first = True
        attempt = 0
        while True:
            try:
                consumer = self._connect(first)
            except (AccessRefused, QueueMismatch):
                raise
            except TaskToolError as exc:
                # At start, a broker that does not answer is said at once (exit 3); one that
                # answered, then closed on us while we declared (RabbitMQ 4 can answer
                # 541 INTERNAL_ERROR to workers declaring the same new queue at once), is
                # tried again a few times first.
                if first and (isinstance(exc, BrokerUnavailable) or attempt >= FIRST_TRIES - 1):
                    raise
                attempt += 1
                wait = backoff.next()
                self.log.event(
                    ev.RECONNECT_FAILED,
                    worker=self.opts.name,
                    attempt=attempt,
                    reason=exc.message,
                    retry_in=f"{wait:.1f}s",
                )
                if self._stop.sleep(wait):
                    self.tally.stop = self._stop.describe("while reconnecting")
                    return self.tally
                continue
            if not first:
                self.log.event(
                    ev.RECONNECTED,
                    worker=self.opts.name,
                    node=self._node,
                    attempts=attempt + 1,
                    note="connection restored; consuming again",
                )
            first, attempt = False, 0
            connected_at = time.monotonic()
            try:
                self._consume(consumer)
                consumer.close()
                self._runner.shutdown()
                return self.tally
            except (ConnectionLost, PublishRefused) as lost:
                self._log_lost(lost.message)
                self._log_dropped(consumer, lost.message)
                consumer.drop()  # what it held unacked, the broker gives back
                self._lost_logged = False
                if self._stop.stage:
                    self.tally.stop = self._stop.describe("after the connection was lost")
                    return self.tally
                if time.monotonic() - connected_at > STABLE_AFTER:
                    backoff.reset()
                    continue
                # Lost soon after connecting (a broker that keeps closing us, say): back
                # off as for a failed connect, so that nothing spins.
                if self._stop.sleep(backoff.next()):
                    self.tally.stop = self._stop.describe("while reconnecting")
                    return self.tally

    def _connect(self, first: bool) -> Consumer:
        conn, url = rabbitmq.connect(
            self.settings, heartbeat=self.opts.heartbeat, client_name=f"work {self.opts.name}"
        )
        self._node = url_host(url)
        try:
            consumer, info = consume(
                conn,
                self.settings,
                prefetch=self.opts.prefetch,
                fast_ack=self.opts.fast_ack,
                known=None if first else self._queue,
                url=url,
            )
        except TaskToolError:
            conn.close()
            raise
        consumer.wake_every(TICK)
        self._queue = info
        self.queue_type = info.queue_type
        if first:
            self.log.event(
                ev.WORKER_READY,
                worker=self.opts.name,
                queue=self.settings.queue,
                queue_type=info.queue_type,
                prefetch=self.opts.prefetch,
                node=self._node,
                note=info.note or None,
            )
            # Once, at start: what the queue lacks (a dead-letter target, the consumer
            # timeout asked for), with the command that fixes it.
            version = rabbitmq.server_version(conn)
            for text in rabbitmq.queue_warnings(
                self.settings, info, url, version, self.settings.management_url
            ):
                self.log.event(ev.QUEUE_WARNING, worker=self.opts.name, queue=info.name, note=text)
        return consumer

    def _lost_mid_task(self, lost: ConnectionLost, task: Task) -> None:
        timeout = lost.consumer_timeout
        if timeout is not None:
            value = f" ({timeout:g} s)" if timeout else ""
            self._settler.note_ending(task.task_id, f"the broker's consumer_timeout{value} ran out")
        self._log_lost(lost.message, task, stopping=timeout is not None)

    def _log_lost(self, reason: str, task: Task | None = None, stopping: bool = False) -> None:
        """Say once per connection, in plain words, that it is gone and what happens next."""
        if self._lost_logged:
            return
        self._lost_logged = True
        if stopping:
            note = "stopping the task (another worker may be running it now), then reconnecting"
        elif task:
            note = "finishing the task; its ack will be lost, so the broker will redeliver it"
        else:
            note = "reconnecting"
        ids = task.ids() if task else {}
        self.log.event(ev.CONNECTION_LOST, worker=self.opts.name, **ids, reason=reason, note=note)

    def _log_dropped(self, consumer: Consumer, reason: str) -> None:
        """Name each delivery that came but was not started, as the connection goes with it."""
        for _method, properties, body in consumer.deliveries:
            tid, row, run = delivery_ids(properties, body)
            self.log.event(
                ev.DROPPED,
                worker=self.opts.name,
                task=tid,
                row=row,
                run=run,
                reason=reason,
                note="received but not started; the broker puts it back in its queue, "
                "if the queue still exists",
            )

    def _should_exit(self, after_one_more: bool = False) -> bool:
        if self._stop.stage:
            return True
        n = self._settler.settled + (1 if after_one_more else 0)
        return self.opts.max_tasks is not None and n >= self.opts.max_tasks

    def _consume(self, consumer: Consumer) -> None:
        """Take deliveries one at a time until a stop, --max-tasks or --exit-when-idle."""
        idle_since = time.monotonic()
        deliveries = consumer.deliveries
        stop = self._stop
        while True:
            if stop.stage:
                acks_before_lines(self._settler, consumer)  # a warm stop mid-batch
                stop.announce(None)
            if self._should_exit():
                break
            if deliveries:
                self._handle(consumer, deliveries.popleft())
                idle_since = time.monotonic()
                continue
            limit: float | None = None  # the wake timer ends the wait within TICK
            if self.opts.exit_when_idle is not None:
                left = idle_since + self.opts.exit_when_idle - time.monotonic()
                if left <= 0:
                    self.tally.stop = f"idle for {self.opts.exit_when_idle:g} s"
                    return
                limit = left if left < TICK else None
            consumer.pump(limit)
        acks_before_lines(self._settler, consumer)  # none wait by now; were one to: before close
        if self._stop.stage == 2:
            self.tally.stop = "cold stop"
        elif self._stop.stage == 1:
            self.tally.stop = "warm stop"
        else:
            self.tally.stop = f"max tasks ({self.opts.max_tasks}) reached"

    # -- one delivery -------------------------------------------------------------------------
    # Two ordering rules hold on this path (settle.py names them): ACKS_BEFORE_LINES (the
    # acks that wait go out before any line is written) and DEFERRED_AFTER_ACK (an instant
    # task's deferred lines are written only once its ack is on the wire).
    def _handle(self, consumer: Consumer, delivery: rabbitmq.Delivery) -> None:
        """One delivery, step by step: decode, count the attempt, log it started, run it,
        log the outcome, settle it."""
        task = self._decode(consumer, delivery)
        if task is None:
            return
        redelivered = bool(delivery[0].redelivered)
        ids = {"task": task.task_id, "row": task.row, "run": task.run_id}  # task.ids(), inline
        early = redelivered and self._redelivered_done_earlier(task)
        if not early and not self._has_attempts_left(consumer, delivery, task, redelivered, ids):
            return
        instant = self._instant is not None and self._instant(task)
        self._log_started(consumer, task, redelivered, instant)
        if early:
            self._ack_done_earlier(consumer, delivery, task, ids)
            return
        outcome, detail, seconds = self._run(consumer, task, instant)
        self._log_outcome(task, outcome, detail, seconds, instant, ids)
        self._settle_outcome(consumer, delivery, task, outcome, detail, instant, ids)

    def _decode(self, consumer: Consumer, delivery: rabbitmq.Delivery) -> Task | None:
        """The delivery's task; a poison message is logged failed and settled (None)."""
        _method, properties, body = delivery
        try:
            return Task.decode(properties, body)
        except DecodeError as exc:
            acks_before_lines(self._settler, consumer)
            tid, row, run = delivery_ids(properties, body)
            ids: dict[str, Any] = {"task": tid, "row": row, "run": run}
            self.log.event(ev.FAILED, worker=self.opts.name, **ids, reason=f"poison message: {exc}")
            decision = decide(POISON, 1, self.queue_type, self.opts.max_attempts, str(exc))
            self._settler.settle(decision, consumer, delivery, ids, self._should_exit(True))
            return None

    def _redelivered_done_earlier(self, task: Task) -> bool:
        """Count a redelivery; True when this worker finished the task but lost its ack."""
        self.tally.redelivered += 1
        return self._settler.finished_earlier(task.task_id)

    def _has_attempts_left(
        self,
        consumer: Consumer,
        delivery: rabbitmq.Delivery,
        task: Task,
        redelivered: bool,
        ids: dict[str, Any],
    ) -> bool:
        """Count the attempt: one past --max-attempts is settled (dead-lettered or retried
        as a copy) without running, and False returned."""
        if not redelivered and task.attempt <= self.opts.max_attempts:
            return True  # a first delivery within --max-attempts: the common case
        # A delivery that carries the broker's count is from a queue that counts (a quorum
        # queue, even one whose type the declaration could not tell).
        counted = broker_count(delivery[1].headers or {}) > 0
        before = decide(
            REDELIVERED if redelivered else ARRIVED,
            task.attempt,
            "quorum" if counted else self.queue_type,
            self.opts.max_attempts,
            self._settler.ending_of(task.task_id) if redelivered else "",
        )
        if before.action is RUN:
            return True
        acks_before_lines(self._settler, consumer)
        self._settler.settle(before, consumer, delivery, ids, self._should_exit(True))
        return False

    def _log_started(
        self, consumer: Consumer, task: Task, redelivered: bool, instant: bool
    ) -> None:
        """The started line: deferred for an instant task (DEFERRED_AFTER_ACK), else written
        now, after the acks that wait (ACKS_BEFORE_LINES)."""
        if not instant or redelivered:
            acks_before_lines(self._settler, consumer)
        # Each line's fields as one dict display: keyword arguments merged with **ids
        # built two dicts a line, a tenth of an instant task's cost.
        started = {
            "worker": self.opts.name,
            "task": task.task_id,
            "row": task.row,
            "run": task.run_id,
            "dots": task.dots,
            "attempt": task.attempt,
            "redelivered": redelivered,
            "body": shorten(task.body),
        }
        if instant:
            self.log.defer(ev.STARTED, started)
        else:
            self.log.event(ev.STARTED, **started)

    def _ack_done_earlier(
        self, consumer: Consumer, delivery: rabbitmq.Delivery, task: Task, ids: dict[str, Any]
    ) -> None:
        """A task finished here whose ack was lost (the connection dropped just before it):
        ack the copy instead of running it again."""
        self.tally.done += 1
        self.log.event(
            ev.DONE,
            worker=self.opts.name,
            **ids,
            seconds=0.0,
            attempt=task.attempt,
            note="finished earlier, but its ack was lost; acked this copy without running it again",
        )
        decision = decide(DONE_EARLIER, task.attempt, self.queue_type, self.opts.max_attempts)
        self._settler.settle(decision, consumer, delivery, ids, self._should_exit(True))

    def _run(self, consumer: Consumer, task: Task, instant: bool) -> tuple[Any, str, float]:
        """Run the task: its outcome, the handler's words and the seconds it took."""
        began = time.monotonic()
        # Nothing to do for an instant task: no thread hop, which would cost more than it.
        outcome, detail = (DONE, "") if instant else self._runner.run(task, consumer)
        seconds = time.monotonic() - began
        self.tally.busy += seconds
        return outcome, detail, seconds

    def _log_outcome(
        self,
        task: Task,
        outcome: Any,
        detail: str,
        seconds: float,
        instant: bool,
        ids: dict[str, Any],
    ) -> None:
        """The done or failed line (an instant task's done is deferred: DEFERRED_AFTER_ACK)."""
        if outcome is DONE:
            self.tally.done += 1
            done = {
                "worker": self.opts.name,
                "task": task.task_id,
                "row": task.row,
                "run": task.run_id,
                "dots": task.dots,
                "seconds": seconds,
                "attempt": task.attempt,
                "output": detail.strip() or None,
            }
            job = self._runner.job
            if job is not None and not instant:
                done.update(job.fields())
            if instant:
                self.log.defer(ev.DONE, done)
            else:
                self.log.event(ev.DONE, **done)
        elif outcome is FAILED:
            self.tally.failed += 1
            failed = {
                "worker": self.opts.name,
                "task": task.task_id,
                "row": task.row,
                "run": task.run_id,
                "attempt": task.attempt,
                "of": self.opts.max_attempts,
                "seconds": seconds,
                "reason": shorten(detail, 300),
            }
            job = self._runner.job
            if job is not None:
                failed.update(job.fields())
            self.log.event(ev.FAILED, **failed)

    def _settle_outcome(
        self,
        consumer: Consumer,
        delivery: rabbitmq.Delivery,
        task: Task,
        outcome: Any,
        detail: str,
        instant: bool,
        ids: dict[str, Any],
    ) -> None:
        """Choose the settle call from the outcome and carry it out; then write the deferred
        lines, once no ack waits (DEFERRED_AFTER_ACK)."""
        settler = self._settler
        decision = decide(outcome, task.attempt, self.queue_type, self.opts.max_attempts, detail)
        # After this one, is it the last? Then the consumer is cancelled before the ack.
        # An instant task with another delivery behind it leaves its ack (and its lines)
        # to the next: with prefetch > 1, one ack and one write per batch, as pika read it.
        later = instant and bool(consumer.deliveries)
        settler.settle(decision, consumer, delivery, ids, self._should_exit(True), later)
        deferred_after_ack(settler, self.log)
