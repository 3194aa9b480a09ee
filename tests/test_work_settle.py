"""What the worker does with a message once its task is over: decide(), without a broker."""

from __future__ import annotations

import pytest

from worker.settle import Action, Outcome, decide


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
@pytest.mark.parametrize("outcome", [Outcome.DONE, Outcome.DONE_EARLIER])
def test_a_done_task_is_acked_and_remembered_should_its_ack_be_lost(outcome, queue_type):
    d = decide(outcome, 2, queue_type, 3)
    assert d.action is Action.ACK and d.done


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_cold_stop_gives_the_task_back_unfinished_whatever_its_attempt(queue_type):
    for attempt in (1, 3, 9):
        d = decide(Outcome.COLD_STOP, attempt, queue_type, 3, "cold stop")
        assert d.action is Action.GIVE_BACK and not d.done


@pytest.mark.parametrize(
    ("queue_type", "action"),
    [
        ("quorum", Action.RETRY_REQUEUE),  # the queue counts deliveries (x-delivery-count)
        ("classic", Action.RETRY_REPUBLISH),  # we count them (x-attempt) on a copy
        ("as it is", Action.RETRY_REPUBLISH),  # a queue whose type we could not tell
    ],
)
def test_a_failed_task_with_attempts_left_is_retried_the_way_its_queue_counts(queue_type, action):
    d = decide(Outcome.FAILED, 2, queue_type, 3, "command exited with code 1")
    assert (d.action, d.attempt, d.done) == (action, 3, False)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
@pytest.mark.parametrize(("attempt", "max_attempts"), [(3, 3), (1, 1), (7, 3)])
def test_a_task_failing_its_last_attempt_is_dead_lettered_with_why(
    queue_type, attempt, max_attempts
):
    # (7, 3): a quorum queue counted more deliveries than --max-attempts allows (a worker
    # killed mid-task counts too, or the limit was lowered since): dead-letter it now.
    d = decide(Outcome.FAILED, attempt, queue_type, max_attempts, "timed out after 1 s")
    assert d.action is Action.DEAD_LETTER and not d.done
    times = "1 time" if attempt == 1 else f"{attempt} times"
    assert d.reason == f"failed {times}; last: timed out after 1 s"


def test_a_poison_message_is_dead_lettered_at_once_with_the_decode_error():
    d = decide(Outcome.POISON, 1, "quorum", 3, "body is not valid UTF-8 (byte 4)")
    assert (d.action, d.reason) == (Action.DEAD_LETTER, "body is not valid UTF-8 (byte 4)")
