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
        assert (d.action, d.reason, d.done) == (Action.GIVE_BACK, "cold stop", False)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_task_the_broker_took_back_mid_run_is_let_go_and_said_to_be_its_consumer_timeout(
    queue_type,
):
    # The broker closed the channel (consumer_timeout) and requeued the task itself: the
    # handler was stopped; reject/cancel on the closed channel are no-ops, the log says why.
    d = decide(Outcome.TAKEN_BACK, 2, queue_type, 3, "the broker's consumer_timeout ran out")
    assert (d.action, d.reason, d.done) == (Action.GIVE_BACK, "consumer_timeout", False)


# Before a task runs: bounded attempts, whatever ended the earlier ones ----------------------
@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_first_delivery_within_max_attempts_runs_as_it_is(queue_type, attempt):
    d = decide(Outcome.ARRIVED, attempt, queue_type, 3)
    assert (d.action, d.attempt) == (Action.RUN, attempt)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_quorum_redelivery_runs_while_its_delivery_count_is_within_max_attempts(attempt):
    # x-delivery-count already counts the attempts that lost their worker.
    d = decide(Outcome.REDELIVERED, attempt, "quorum", 3)
    assert (d.action, d.attempt) == (Action.RUN, attempt)


def test_a_quorum_redelivery_past_max_attempts_is_dead_lettered_before_it_runs():
    d = decide(Outcome.REDELIVERED, 4, "quorum", 3)
    assert d.action is Action.DEAD_LETTER and not d.done
    assert d.reason == (
        "lost its worker (crash, kill, lost connection or given back) on attempt 3; "
        "attempt 4 would be past --max-attempts 3"
    )


@pytest.mark.parametrize("queue_type", ["classic", "as it is"])
@pytest.mark.parametrize("attempt", [1, 2])
def test_a_classic_redelivery_counts_the_lost_attempt_on_a_confirmed_copy_instead_of_running(
    queue_type, attempt
):
    # A classic queue keeps no count: the copy carries x-attempt + 1 and runs in its place.
    d = decide(Outcome.REDELIVERED, attempt, queue_type, 3)
    assert (d.action, d.attempt, d.done) == (Action.RETRY_REPUBLISH, attempt + 1, False)
    assert d.reason == (
        f"lost its worker (crash, kill, lost connection or given back) on attempt {attempt}"
    )


def test_a_classic_redelivery_of_its_last_attempt_is_dead_lettered_before_it_runs():
    d = decide(Outcome.REDELIVERED, 3, "classic", 3)
    assert d.action is Action.DEAD_LETTER
    assert d.reason.endswith("on attempt 3; attempt 4 would be past --max-attempts 3")


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_first_delivery_already_past_max_attempts_is_dead_lettered_before_it_runs(queue_type):
    # A worker with a higher --max-attempts retried it, or the limit was lowered since.
    d = decide(Outcome.ARRIVED, 5, queue_type, 3)
    assert (d.action, d.reason) == (Action.DEAD_LETTER, "attempt 5 is past --max-attempts 3")


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_what_ended_the_last_attempt_goes_into_the_reason_when_the_worker_saw_it(queue_type):
    attempt = 4 if queue_type == "quorum" else 3
    d = decide(
        Outcome.REDELIVERED, attempt, queue_type, 3, "the broker's consumer_timeout (3 s) ran out"
    )
    assert d.reason == (
        "the broker's consumer_timeout (3 s) ran out on attempt 3; "
        "attempt 4 would be past --max-attempts 3"
    )


@pytest.mark.parametrize("max_attempts", [1, 3, 5])
@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_task_that_kills_its_worker_every_time_runs_max_attempts_times_then_is_dead_lettered(
    queue_type, max_attempts
):
    """The crash loop, walked through decide(): each run ends without a result."""
    attempt, redelivered, runs = 1, False, 0
    for _ in range(50):
        d = decide(
            Outcome.REDELIVERED if redelivered else Outcome.ARRIVED,
            attempt,
            queue_type,
            max_attempts,
        )
        if d.action is Action.DEAD_LETTER:
            break
        if d.action is Action.RETRY_REPUBLISH:  # classic: the copy arrives afresh
            attempt, redelivered = d.attempt, False
            continue
        assert d.action is Action.RUN
        runs += 1
        # The worker dies: the broker redelivers it (a quorum queue counts the delivery).
        attempt, redelivered = (attempt + 1 if queue_type == "quorum" else attempt), True
    assert (runs, d.action) == (max_attempts, Action.DEAD_LETTER)


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
