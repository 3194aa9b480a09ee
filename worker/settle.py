"""Settling a task: decide what its outcome means for its message, then do it in one place.

decide() is a plain function of the outcome, the attempt, the queue type and
--max-attempts; Settler.settle() carries its decision out on the broker and logs what
became of the message. Every ack, nack, reject and republish of the worker happens there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from utils import rabbitmq
from utils.errors import ConnectionLost
from utils.eventlog.format import shorten
from utils.eventlog.log import EventLog
from utils.eventlog.schema import ACK_LOST, DEAD_LETTERED, REQUEUED, RETRY
from utils.task import BROKER_COUNTS, H_ATTEMPT, H_REASON
from utils.text import plural
from worker.consumer import Consumer

#: How many finished-but-unacked task ids a worker remembers.
DONE_UNACKED_MAX = 1000


class Outcome(Enum):
    """How handling a delivery ended; ARRIVED and REDELIVERED: where it stands before it runs."""

    DONE = "task done"
    FAILED = "task failed"
    COLD_STOP = "cold stop"  # interrupted by a second stop signal
    POISON = "poison"  # the message cannot be read as a task
    DONE_EARLIER = "done earlier"  # we finished this task before, but its ack was lost
    #: the broker took the task back while it ran (its consumer_timeout ran out), so the
    #: handler was stopped: another worker may be running it already
    TAKEN_BACK = "taken back"
    #: not run yet: a first delivery
    ARRIVED = "arrived"
    #: not run yet: delivered again, after an attempt that ended with no result (its worker
    #: crashed, was killed or lost its connection, or gave it back unfinished)
    REDELIVERED = "redelivered"


class Action(Enum):
    """What happens to the message."""

    ACK = "ack"
    #: reject with requeue: a quorum queue counts the failed delivery itself
    #: (x-delivery-count on every version; from RabbitMQ 4.3 a nack would not count)
    RETRY_REQUEUE = "retry by requeue"
    #: a confirmed copy with x-attempt + 1, then ack the original (a classic queue)
    RETRY_REPUBLISH = "retry by republish"
    #: a confirmed copy in <queue>.dead with the reason, then ack the original
    DEAD_LETTER = "dead-letter"
    #: reject with requeue, unfinished: another worker will do it
    GIVE_BACK = "give back"
    #: run the task: it has attempts left
    RUN = "run"


# Python 3.11 takes about 0.2 µs to look an enum member up (Outcome.DONE), several times a
# task; the per-task path compares with these module-level names instead.
DONE, FAILED, COLD_STOP, POISON, DONE_EARLIER = (
    Outcome.DONE,
    Outcome.FAILED,
    Outcome.COLD_STOP,
    Outcome.POISON,
    Outcome.DONE_EARLIER,
)
TAKEN_BACK, ARRIVED, REDELIVERED = Outcome.TAKEN_BACK, Outcome.ARRIVED, Outcome.REDELIVERED
ACK, RETRY_REQUEUE, RETRY_REPUBLISH, DEAD_LETTER, GIVE_BACK, RUN = (
    Action.ACK,
    Action.RETRY_REQUEUE,
    Action.RETRY_REPUBLISH,
    Action.DEAD_LETTER,
    Action.GIVE_BACK,
    Action.RUN,
)

#: The reason= of a task given back by a cold stop, and of one the broker took back when
#: its consumer_timeout ran out (tasks report reads both).
COLD_STOPPED = "cold stop"
CONSUMER_TIMEOUT = "consumer_timeout"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one delivery, and what the doing needs to know."""

    action: Action
    reason: str = ""  # why it is dead-lettered (x-failure-reason), retried or given back
    attempt: int = 0  # the number of the attempt a retry, or this run, will be
    done: bool = False  # the work is done: should the ack be lost, do not run it again


_ACK_DONE = Decision(ACK, done=True)
_GIVE_BACK_UNFINISHED = Decision(GIVE_BACK, COLD_STOPPED)
_GIVEN_BACK_BY_THE_BROKER = Decision(GIVE_BACK, CONSUMER_TIMEOUT)


def decide(
    outcome: Outcome, attempt: int, queue_type: str, max_attempts: int, reason: str = ""
) -> Decision:
    """What to do with a delivery, from its outcome, its attempt number and the queue type.

    `reason` says why a task failed, or why a message is poison. Before a task runs
    (ARRIVED, REDELIVERED), decide says whether it may: whatever ended its earlier attempts,
    a task past --max-attempts goes to the dead-letter queue instead; `reason` then says
    what ended its last attempt, when this worker saw it (a consumer_timeout, say).
    """
    if outcome is DONE or outcome is DONE_EARLIER:
        return _ACK_DONE
    if outcome is COLD_STOP:
        return _GIVE_BACK_UNFINISHED
    if outcome is TAKEN_BACK:
        return _GIVEN_BACK_BY_THE_BROKER
    if outcome is POISON:
        return Decision(DEAD_LETTER, reason)
    if outcome is ARRIVED or outcome is REDELIVERED:
        return _before_it_runs(outcome is REDELIVERED, attempt, queue_type, max_attempts, reason)
    if attempt >= max_attempts:
        return Decision(DEAD_LETTER, f"failed {plural(attempt, 'time')}; last: {reason}")
    if queue_type == "quorum":
        return Decision(RETRY_REQUEUE, attempt=attempt + 1)
    # A classic queue (or one of a type we could not tell) keeps no count of deliveries.
    return Decision(RETRY_REPUBLISH, attempt=attempt + 1)


def _before_it_runs(
    redelivered: bool, attempt: int, queue_type: str, max_attempts: int, ended: str
) -> Decision:
    """Run a delivery, or dead-letter it when it is past --max-attempts (docs/DESIGN.md).

    A quorum queue counts every delivery that ended without an ack (x-delivery-count), so
    `attempt` already counts an attempt that lost its worker. A classic queue counts
    nothing: a redelivered message there carries the x-attempt of the attempt that was cut
    short, so that attempt is counted now, on a confirmed copy with x-attempt + 1 that
    takes its place in the queue. Either way, nothing loops for ever.
    """
    counted_here = redelivered and queue_type != "quorum"
    now = attempt + 1 if counted_here else attempt
    if now > max_attempts:
        if not redelivered:
            return Decision(DEAD_LETTER, f"attempt {now} is past --max-attempts {max_attempts}")
        return Decision(
            DEAD_LETTER,
            f"{ended or _LOST_WORKER} on attempt {now - 1}; attempt {now} would be past "
            f"--max-attempts {max_attempts}",
        )
    if counted_here:
        return Decision(RETRY_REPUBLISH, f"{ended or _LOST_WORKER} on attempt {attempt}", now)
    return Decision(RUN, attempt=now)


#: What ended an attempt that came back with no result, as far as the queue can tell.
_LOST_WORKER = "lost its worker (crash, kill, lost connection or given back)"


@dataclass
class WorkerTally:
    """What a worker did, printed when it exits; each count moves where its event is logged."""

    done: int = 0
    failed: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    busy: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    stop: str = "finished"

    def line(self, name: str) -> str:
        """The summary line a worker prints when it exits."""
        idle = max(0.0, time.monotonic() - self.started_at - self.busy)
        return (
            f"worker {name}: {self.done} done, {self.failed} failed, "
            f"{self.dead_lettered} dead-lettered, {self.redelivered} redelivered, "
            f"busy {self.busy:.1f} s, idle {idle:.1f} s ({self.stop})"
        )


class Settler:
    """Carries out decisions on the broker, and logs what became of each message."""

    def __init__(
        self, queue: str, worker: str, max_attempts: int, log: EventLog, tally: WorkerTally
    ) -> None:
        self.queue = queue
        self.dead_queue = rabbitmq.dead_letter_name(queue)
        self.worker = worker
        self.max_attempts = max_attempts
        self.log = log
        self.tally = tally
        #: Messages acked, requeued for retry, or dead-lettered (not those given back).
        self.settled = 0
        #: Tasks that finished but whose ack was lost: a redelivered copy is acked at once
        #: instead of being run again (bounded; oldest forgotten first).
        self._done_unacked: dict[str, None] = {}
        #: What ended a task's last attempt here, when the worker knows better than the queue
        #: (the broker took it back: consumer_timeout); bounded like _done_unacked.
        self._endings: dict[str, str] = {}
        #: The consumer on whose connection we last made sure the dead-letter queue exists
        #: (it may have gone with a broker that restarted).
        self._dead_declared_on: Consumer | None = None
        #: (tag, ids) of finished tasks whose ack waits for the next one (see settle's
        #: `later`), oldest first.
        self._unsent: list[tuple[int, dict[str, Any]]] = []

    @property
    def acks_waiting(self) -> bool:
        """True while finished tasks wait for their ack (their deferred lines must wait too)."""
        return bool(self._unsent)

    def finished_earlier(self, task_id: str) -> bool:
        """True, once, for a task this worker finished but whose ack was lost."""
        if task_id in self._done_unacked:
            del self._done_unacked[task_id]
            return True
        return False

    def note_ending(self, task_id: str, what: str) -> None:
        """Remember what ended a task's attempt here, for the reason should it be dead-lettered."""
        self._endings[task_id] = what
        while len(self._endings) > DONE_UNACKED_MAX:
            del self._endings[next(iter(self._endings))]

    def ending_of(self, task_id: str) -> str:
        """What ended this task's last attempt here ('' when this worker did not see it end)."""
        return self._endings.pop(task_id, "")

    def settle(
        self,
        decision: Decision,
        consumer: Consumer,
        delivery: rabbitmq.Delivery,
        ids: dict[str, Any],
        last: bool = False,
        later: bool = False,
    ) -> None:
        """Do what the decision says with one delivery.

        `last`: the worker takes no task after this one, so stop the consumer first.
        `later`: the caller has the next delivery in hand already, so an ack may wait for
        it: the next ack then covers both (multiple), or send_acks() sends it. With
        prefetch > 1 that is one ack, and one socket write, per batch of deliveries.
        Raises ConnectionLost (or PublishRefused) when the broker goes meanwhile; the
        broker then redelivers the message.
        """
        method, properties, body = delivery
        tag = method.delivery_tag
        action = decision.action
        if action is ACK and later and not last:
            self._unsent.append((tag, ids))
            self.settled += 1
            return
        if action is not ACK:
            self.send_acks(consumer)  # before this message's lines, and in order
        if action is GIVE_BACK:
            try:
                consumer.cancel()
                consumer.reject(tag)
            except ConnectionLost:
                pass  # closing the connection gives it back all the same
            note = (
                "stopped the task: the broker had given it back to the queue already "
                "(consumer_timeout), and another worker may be running it; for tasks this "
                "long, raise the timeout (docs/WORKER.md)"
                if decision.reason == CONSUMER_TIMEOUT
                else "gave the task back to the queue unfinished; another worker will do it"
            )
            self.log.event(REQUEUED, worker=self.worker, **ids, reason=decision.reason, note=note)
            return
        if action is not ACK:
            self._before_the_ack(decision, consumer, properties, body, ids)
        # The one place a message is acked, or nacked for a retry. On a connection already
        # lost (mid-task, say) pika refuses the call, and that too is ConnectionLost.
        try:
            if last:
                consumer.cancel()
            if action is RETRY_REQUEUE:
                consumer.reject(tag)
            else:
                # Acks waiting (all for earlier tags) go with this one: every delivery
                # before it is then settled, so `multiple` acks exactly those.
                consumer.ack(tag, multiple=bool(self._unsent))
        except ConnectionLost:
            self._acks_lost(decision.done, ids)
            raise
        self._unsent.clear()
        self.settled += 1
        if action is DEAD_LETTER:
            self.tally.dead_lettered += 1
            self.log.event(
                DEAD_LETTERED,
                worker=self.worker,
                **ids,
                queue=self.dead_queue,
                reason=shorten(decision.reason, 300),
                note=f"moved to {self.dead_queue}; 'tasks dead' lists it, "
                "'tasks dead --requeue' retries it",
            )

    def send_acks(self, consumer: Consumer) -> None:
        """Send the acks that wait (see settle's `later`), then write their deferred lines."""
        if not self._unsent:
            return
        try:
            consumer.ack(self._unsent[-1][0], multiple=True)
        except ConnectionLost:
            self._acks_lost(False, None)
            raise
        self._unsent.clear()
        deferred_after_ack(self, self.log)

    def _acks_lost(self, done: bool, ids: dict[str, Any] | None) -> None:
        """The acks that waited and (with ids) this one were lost: log each, remember them."""
        lost = [(True, waiting) for _tag, waiting in self._unsent]
        self.settled -= len(self._unsent)
        self._unsent.clear()
        if ids is not None:
            lost.append((done, ids))
        for task_done, task_ids in lost:
            tid = task_ids.get("task")
            if task_done and tid is not None:
                self._done_unacked[tid] = None
                while len(self._done_unacked) > DONE_UNACKED_MAX:
                    del self._done_unacked[next(iter(self._done_unacked))]
            self.log.event(
                ACK_LOST,
                worker=self.worker,
                **task_ids,
                note=f"ack lost; the broker will redeliver task {tid}",
            )

    def _before_the_ack(
        self,
        decision: Decision,
        consumer: Consumer,
        properties: Any,
        body: bytes,
        ids: dict[str, Any],
    ) -> None:
        """A retry is logged; a republished retry or a dead letter is copied, confirmed."""
        action = decision.action
        if action is RETRY_REQUEUE or action is RETRY_REPUBLISH:
            self.log.event(
                RETRY,
                worker=self.worker,
                **ids,
                attempt=decision.attempt,
                of=self.max_attempts,
                reason=decision.reason or None,
            )
        headers = dict(properties.headers or {})
        if action is RETRY_REPUBLISH:
            # The copy is a new message: the broker counts its deliveries afresh, and our
            # x-attempt carries what went before.
            for name in BROKER_COUNTS:
                headers.pop(name, None)
            headers[H_ATTEMPT] = decision.attempt
            rabbitmq.publish_copy(consumer.connection, self.queue, body, properties, headers)
        elif action is DEAD_LETTER:
            headers[H_REASON] = shorten(decision.reason, 500)
            declare = self._dead_declared_on is not consumer
            rabbitmq.publish_copy(
                consumer.connection, self.dead_queue, body, properties, headers, declare=declare
            )
            self._dead_declared_on = consumer


def acks_before_lines(settler: Settler, consumer: Consumer) -> None:
    """The rule "acks before lines": the acks that wait go out before any line is written.

    Writing a line writes the deferred lines first (EventLog.event flushes them), and those
    include the `done` of instant tasks whose ack waits (settle's `later`): sending the acks
    first keeps every `done` after its ack, and the lines in the order they happened. Every
    path that writes a line while acks may wait calls this first (tests/test_work.py
    checks, at every write, that no ack waits).
    """
    settler.send_acks(consumer)


def deferred_after_ack(settler: Settler, log: EventLog) -> None:
    """The rule "deferred lines after the ack": an instant task's deferred lines (EventLog.defer)
    are written only once no ack waits, that is once the ack covering them is on the wire.

    So a `done` in the log never stands for a message the broker may still hand out again
    unannounced: were the worker to die before the ack, no line says done. (A task that
    runs logs `done` before its ack, as it always did: an ack lost there logs `ack_lost`.)
    """
    if not settler.acks_waiting:
        log.flush()
