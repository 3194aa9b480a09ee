"""The shape of the queues we create, for each RabbitMQ version: names, arguments, policy.

Plain data, no broker calls: utils/broker.py declares with it, utils/management.py sets
the policy with it, and both `work` and `tasks status` compare an existing queue with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The delivery limit of the quorum queues we create. The broker dead-letters a message
#: delivered this many times plus one (to <queue>.dead, with x-death reason delivery_limit).
#: Our workers dead-letter a task themselves once past --max-attempts (3 by default), so
#: this limit only acts on what they never see: another consumer that keeps rejecting a
#: message, or --max-attempts set above it. 20 is RabbitMQ 4's own default, so the broker
#: gives up at the count it would anyway, but into <queue>.dead instead of dropping it.
DELIVERY_LIMIT = 20

#: x-consumer-timeout (queue argument) and the consumer-timeout policy key came in 3.12.
CONSUMER_TIMEOUT_SINCE = (3, 12)
#: From 4.3 the broker compares x-consumer-timeout when a quorum queue is declared again,
#: refuses it on a classic queue, enforces consumer timeouts on quorum queues only, and
#: takes x-consumer-timeout as a basic.consume argument, ahead of the queue's and policy's.
CONSUMER_ARGUMENT_SINCE = (4, 3)


def dead_letter_name(queue: str) -> str:
    """The dead-letter queue of a work queue: `<queue>.dead`."""
    return f"{queue}.dead"


def policy_name(queue: str) -> str:
    """The name of the policy we set on a work queue: `<queue>-tasks`."""
    return f"{queue}-tasks"


def dead_letter_settings(queue: str) -> dict[str, Any]:
    """What a quorum queue of ours needs so that the broker never drops a task (as policy keys).

    Dead letters go to <queue>.dead at DELIVERY_LIMIT, at least once: the broker keeps a
    dead letter until <queue>.dead has confirmed it (docs/DESIGN.md). That strategy needs
    overflow reject-publish, which matters only under a length limit: a full queue then
    refuses new messages (emit reports them) instead of dropping its oldest.
    """
    return {
        "dead-letter-exchange": "",
        "dead-letter-routing-key": dead_letter_name(queue),
        "delivery-limit": DELIVERY_LIMIT,
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }


def queue_arguments(queue_type: str, name: str) -> dict[str, Any]:
    """The arguments of a work queue that carries its own dead-letter settings.

    We declare a quorum queue this way only where no policy of ours can give them (no
    management API, or a user who may not set policies): the RabbitMQ tutorial's scripts,
    which declare only x-queue-type, are then refused (406). A classic queue has no
    delivery limit, so nothing there is dropped by the broker: it keeps its one argument.
    """
    if queue_type != "quorum":
        return {"x-queue-type": queue_type}
    args = {f"x-{k}": v for k, v in dead_letter_settings(name).items()}
    return {"x-queue-type": "quorum", **args}


def task_policy(
    queue: str, consumer_timeout_ms: int | None, version: tuple[int, ...]
) -> dict[str, Any]:
    """The definition of our policy on a quorum work queue: its dead-letter settings, and the
    consumer timeout asked for where the broker's policies know it (3.12 and later)."""
    definition = dead_letter_settings(queue)
    if consumer_timeout_ms and (not version or version >= CONSUMER_TIMEOUT_SINCE):
        definition["consumer-timeout"] = consumer_timeout_ms
    return definition


def consumer_timeout_argument(version: tuple[int, ...]) -> bool:
    """True when a new queue may carry x-consumer-timeout as an argument.

    3.12 to 4.2 honour it and never compare it. 4.3 refuses it on a classic queue and
    compares it on a quorum queue (so the tutorial's declaration would be refused): there
    the worker's consumer argument, or our policy, carries it instead. 3.10 ignores it.
    """
    return bool(version) and CONSUMER_TIMEOUT_SINCE <= version < CONSUMER_ARGUMENT_SINCE


def consumer_timeout_on_consume(queue_type: str, version: tuple[int, ...]) -> bool:
    """True when a consumer of this queue type may ask for its own x-consumer-timeout:
    RabbitMQ 4.3 on a quorum queue (it refuses the argument on a classic queue; before
    4.3 the argument is taken and does nothing)."""
    return queue_type == "quorum" and version >= CONSUMER_ARGUMENT_SINCE


@dataclass(frozen=True)
class QueueInfo:
    """What we learnt about the work queue while declaring it."""

    name: str
    queue_type: str  # quorum, classic, or "as it is" when the broker did not say
    created: bool
    messages: int
    consumers: int
    note: str = ""
    #: A quorum queue whose own arguments name no dead-letter target (one made by the
    #: tutorial, by another tool, or by us with our policy): the broker drops what it gives
    #: up on, unless a policy sets one (utils/management.py looks). False for every other.
    no_dead_letter_args: bool = False
