"""The work queue and its side queues: their shape per RabbitMQ version, and declaring them.

The shape (names, arguments, our policy's definition, where a consumer timeout may go) is
plain data. declare_queue makes sure the work queue exists, setting our policy through
the management API first, or probes an existing queue's shape with the declaration we
would make; queue_counts, probe_queue_type and queue_shape look without creating; and
queue_warnings says what an existing queue lacks. `emit`, `work` and `tasks` all use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from utils.errors import QueueMismatch
from utils.rabbitmq.connect import operation, server_version
from utils.rabbitmq.errors import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    Refusal,
    queue_error,
    queue_errors,
    refused,
)
from utils.rabbitmq.management import (
    ensure_task_policy,
    policy_command,
    queue_settings,
)
from utils.settings import Settings, url_vhost

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
    #: up on, unless a policy sets one (queue_warnings looks). False for every other.
    no_dead_letter_args: bool = False


def queue_warnings(
    settings: Settings,
    info: QueueInfo,
    amqp_url: str,
    broker_version: tuple[int, ...] = (),
    management_url: str | None = None,
) -> list[str]:
    """What an existing queue lacks that we would have given it, one line each (none when
    nothing is amiss): a dead-letter target (quorum), and the consumer timeout asked for.

    Where a policy can give it, the line names the one command that does; one policy is in
    force on a queue at a time, so that command gives it both.
    """
    lines: list[str] = []
    timeout_ms = round(settings.consumer_timeout * 1000) if settings.consumer_timeout else None
    if timeout_ms and broker_version >= CONSUMER_ARGUMENT_SINCE:
        # 4.3 and later: the worker's own consumer asks for it, on any quorum queue; a
        # classic queue has no consumer timeout at all there.
        if info.queue_type == "classic":
            lines.append(
                f"RabbitMQ {'.'.join(map(str, broker_version))} enforces no consumer timeout "
                "on classic queues, so a task may take as long as it needs here; "
                "--consumer-timeout changes nothing"
            )
        timeout_ms = None
    if timeout_ms and broker_version and broker_version < CONSUMER_TIMEOUT_SINCE:
        version = ".".join(map(str, broker_version))
        lines.append(
            f"RabbitMQ {version} has no per-queue consumer timeout (it came in 3.12), so "
            f"--consumer-timeout does nothing here; raise the node's instead: "
            f"consumer_timeout = {timeout_ms} in rabbitmq.conf, or at once: rabbitmqctl eval "
            f"'application:set_env(rabbit, consumer_timeout, {timeout_ms}).'"
        )
        timeout_ms = None
    need_dead_letter = info.no_dead_letter_args
    need_timeout = bool(timeout_ms) and not info.created
    if not (need_dead_letter or need_timeout):
        return lines
    found = queue_settings(amqp_url, info.name, management_url)
    wanted: dict[str, Any] = {}
    gaps: list[str] = []
    if need_dead_letter and found.setting("dead-letter-exchange") is None:
        gaps.append(
            "no dead-letter target, so a message the broker gives up on is dropped "
            f"(RabbitMQ 4 gives up after {DELIVERY_LIMIT} deliveries by default)"
        )
    if need_timeout and found.setting("consumer-timeout") != timeout_ms:
        wanted["consumer-timeout"] = timeout_ms
        gaps.append(
            "a consumer timeout that --consumer-timeout cannot change (it applies only to "
            "a queue we create)"
        )
    if not gaps:
        return lines
    if need_dead_letter:
        wanted.update(dead_letter_settings(info.name))
    unsure = (
        ""
        if found.answered
        else f" ({found.note}, so a policy that already sees to it could not be checked)"
    )
    command = policy_command(info.name, url_vhost(amqp_url), wanted)
    lines.append(f"queue '{info.name}' has {' and '.join(gaps)}{unsure}; fix it with: {command}")
    return lines


# -- declaring and probing over AMQP ----------------------------------------------------------
#: The arguments that name a queue's dead-letter target.
_DEAD_LETTER_ARGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key")
_INEQUIVALENT = re.compile(r"inequivalent arg '(?P<arg>[^']+)'.*current is (?P<current>.*)$")


def _declare(connection: Any, name: str, **how: Any) -> tuple[Any, Any]:
    """queue.declare on a new channel: (the channel, its DeclareOk or the broker's Refusal;
    a refusal closes that channel)."""
    channel = connection.channel()
    return channel, refused(lambda: channel.queue_declare(name, **how))


def _probe(connection: Any, name: str, arguments: dict[str, Any]) -> tuple[Any, str, str]:
    """Declare an existing queue with these arguments: (channel, "", "") when they match,
    else a fresh channel and the first argument the broker found different, and its value.

    The broker checks a queue's dead-letter arguments before its type, so a 406 about
    x-dead-letter-exchange says nothing of the type.
    """
    channel, got = _declare(connection, name, durable=True, arguments=arguments)
    if not isinstance(got, Refusal):
        return channel, "", ""
    if got.reply_code != PRECONDITION_FAILED:
        raise queue_error(got, name)
    m = _INEQUIVALENT.search(got.reply_text)
    return connection.channel(), (m["arg"] if m else "?"), (m["current"] if m else "?")


@operation
def declare_queue(connection: Any, settings: Settings, url: str = "") -> tuple[Any, QueueInfo]:
    """Make sure the work queue exists, using an existing one as it is where we safely can.

    A quorum queue we create gets a dead-letter target, <queue>.dead, declared with it:
    from our policy where the management API lets us set one, so that the queue is
    declared as the RabbitMQ tutorial declares it (x-queue-type alone) and its scripts
    share it; else from the queue's own arguments, which the tutorial's declaration
    cannot match (docs/DESIGN.md). `url` is the AMQP URL `connection` was opened with.
    Returns an open channel (a 406 or 404 closes the one it happened on) and what we found.
    """
    name = settings.queue
    channel, ok = _declare(connection, name, passive=True)
    if isinstance(ok, Refusal):
        if ok.reply_code != NOT_FOUND:
            raise queue_error(ok, name)
        arguments, note = _new_queue_arguments(connection, settings, url or settings.url)
        channel = connection.channel()
        with queue_errors(name):  # the broker refusing <queue>.dead refuses the queue
            if settings.queue_type == "quorum":
                _ensure(connection, dead_letter_name(name))
            channel.queue_declare(name, durable=True, arguments=arguments)
        return channel, QueueInfo(name, settings.queue_type, True, 0, 0, note)

    channel.close()
    channel, info = _shape(connection, name, settings.queue_type, ok.method)
    if info.queue_type == "quorum":
        # Where a dead-letter target (ours, or a policy's) sends what the broker gives up on;
        # an operator may have deleted it, and at least once, the broker waits for it.
        _ensure(connection, dead_letter_name(name))
    return channel, info


@operation
def declare_for_publishing(connection: Any, settings: Settings, url: str = "") -> QueueInfo:
    """declare_queue, for a caller that publishes to the queue rather than consumes it:
    what was found (the channel declare_queue leaves open is closed)."""
    channel, info = declare_queue(connection, settings, url)
    channel.close()
    return info


def _new_queue_arguments(
    connection: Any, settings: Settings, url: str
) -> tuple[dict[str, Any], str]:
    """The arguments to create the work queue with, and a note when they may surprise.

    A quorum queue takes its dead-letter settings (and a consumer timeout asked for) from
    our policy, set first; where that cannot be, from its own arguments, and the note says
    why the tutorial's scripts will then be refused. x-consumer-timeout goes on the queue
    only where the broker honours it without comparing it (3.12 to 4.2).
    """
    name, version = settings.queue, server_version(connection)
    timeout_ms = round(settings.consumer_timeout * 1000) if settings.consumer_timeout else None
    note = ""
    in_policy = False
    if settings.queue_type == "quorum":
        definition = task_policy(name, timeout_ms, version)
        policy = ensure_task_policy(url, name, definition, settings.management_url)
        if policy.in_force:
            arguments: dict[str, Any] = {"x-queue-type": "quorum"}
            in_policy = policy.note == "" and "consumer-timeout" in definition
        else:
            arguments = queue_arguments("quorum", name)
            note = (
                f"queue '{name}' was created with its dead-letter settings as arguments, "
                f"since {policy.note}: the RabbitMQ tutorial's scripts cannot declare it "
                "(406 inequivalent arg); docs/DESIGN.md says how to share a queue with them"
            )
    else:
        arguments = queue_arguments(settings.queue_type, name)
    if timeout_ms and not in_policy and consumer_timeout_argument(version):
        # The broker does not compare it on a later declaration, so it never clashes.
        arguments["x-consumer-timeout"] = timeout_ms
    return arguments, note


@operation
def queue_shape(connection: Any, name: str) -> QueueInfo | None:
    """What declare_queue would find of an existing queue (None when there is none); it
    creates nothing."""
    counts = _passive(connection, name)
    if counts is None:
        return None
    channel, info = _shape(connection, name, "quorum", counts)
    channel.close()
    return info


def _passive(connection: Any, name: str) -> Any:
    """A queue's Queue.DeclareOk (message and consumer counts), or None when there is none."""
    channel, ok = _declare(connection, name, passive=True)
    if isinstance(ok, Refusal):
        if ok.reply_code == NOT_FOUND:
            return None
        raise queue_error(ok, name)
    channel.close()
    return ok.method


def _shape(connection: Any, name: str, wanted: str, counts: Any) -> tuple[Any, QueueInfo]:
    """Probe an existing queue's shape with the declaration we would have made (of type
    `wanted`); a 406 names the first argument that differs and what the queue has instead.
    Returns an open channel and what we found."""
    messages, consumers = counts.message_count, counts.consumer_count
    channel, arg, current = _probe(connection, name, queue_arguments(wanted, name))
    if not arg:
        return channel, QueueInfo(name, wanted, False, messages, consumers)
    if arg in ("durable", "auto_delete", "exclusive"):
        raise QueueMismatch(
            f"queue '{name}' already exists but is not a durable, shared queue "
            f"({arg} is {current}): its tasks would not survive a broker restart",
            f"delete it ('tasks purge' empties it; 'scripts/broker ctl delete_queue {name}' "
            f"removes it) or pick another name with --queue / TASK_QUEUE",
        )
    if wanted != "quorum":  # perhaps a quorum queue of ours
        channel.close()
        channel, arg, current = _probe(connection, name, queue_arguments("quorum", name))
        if not arg:
            note = _as_it_is(name, "quorum", wanted)
            return channel, QueueInfo(name, "quorum", False, messages, consumers, note)
    if arg in _DEAD_LETTER_ARGS and current.strip() == "none":
        # No dead-letter arguments: a queue made before we declared them, or by another
        # tool. Its type, asked alone, tells the rest.
        channel.close()
        channel, arg, current = _probe(connection, name, {"x-queue-type": "quorum"})
        if not arg:
            note = _as_it_is(name, "quorum", wanted)
            return channel, QueueInfo(
                name, "quorum", False, messages, consumers, note, no_dead_letter_args=True
            )
    if arg in ("x-delivery-limit", "x-dead-letter-strategy"):  # only quorum queues check these
        note = f"queue '{name}' exists with its own {arg} ({current}); using it as it is"
        return channel, QueueInfo(name, "quorum", False, messages, consumers, note)
    if arg == "x-queue-type":
        found = _found_type(current)
        if found == "stream":
            raise QueueMismatch(
                f"queue '{name}' is a stream, which cannot serve as a work queue",
                "pick another name with --queue / TASK_QUEUE",
            )
        note = _as_it_is(name, found, wanted)
        return channel, QueueInfo(name, found, False, messages, consumers, note)
    note = f"queue '{name}' exists with other arguments ({arg}); using it as it is"
    return channel, QueueInfo(name, "as it is", False, messages, consumers, note)


def _as_it_is(name: str, found: str, wanted: str) -> str:
    """The note for an existing queue of another type than we would create ('' if the same)."""
    return "" if found == wanted else f"queue '{name}' exists as a {found} queue; using it as it is"


def _found_type(current: str) -> str:
    """The queue type named in a 406 text: "none" means a classic queue."""
    current = current.strip()
    if current == "none":
        return "classic"
    parts = current.split("'")
    return parts[1] if len(parts) > 1 else current


@operation
def queue_counts(connection: Any, name: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of a queue, or None when it does not exist; creates nothing."""
    counts = _passive(connection, name)
    return None if counts is None else (counts.message_count, counts.consumer_count)


@operation
def probe_queue_type(connection: Any, name: str) -> str:
    """The type of an existing queue (quorum, classic, stream), or "unknown".

    AMQP cannot ask for it; declaring it as a quorum queue either matches or fails with a
    406 that names the type it has. Call it only on a queue known to exist.
    """
    channel, got = _declare(connection, name, durable=True, arguments={"x-queue-type": "quorum"})
    if not isinstance(got, Refusal):
        channel.close()
        return "quorum"
    m = _INEQUIVALENT.search(got.reply_text)
    if got.reply_code != PRECONDITION_FAILED or not m:
        return "unknown"
    if m["arg"] == "x-queue-type":
        return _found_type(m["current"])
    if m["arg"] in _DEAD_LETTER_ARGS:
        # The broker checks dead-letter arguments before the type: only a quorum queue of
        # ours has them with these values, so try that declaration.
        channel, got = _declare(
            connection, name, durable=True, arguments=queue_arguments("quorum", name)
        )
        if isinstance(got, Refusal):
            return "unknown"
        channel.close()
        return "quorum"
    return "unknown"


@operation
def ensure_queue(connection: Any, name: str) -> None:
    """Make sure a durable side queue (e.g. `<queue>.dead`) exists, as it is if it does."""
    _ensure(connection, name)


def _ensure(connection: Any, name: str) -> None:
    if _passive(connection, name) is not None:
        return
    channel = connection.channel()
    channel.queue_declare(name, durable=True)
    channel.close()


@operation
def purge_queue(connection: Any, name: str) -> int:
    """Remove every ready message from a queue; how many went."""
    channel = connection.channel()
    with queue_errors(name):
        removed = int(channel.queue_purge(name).method.message_count)
    channel.close()
    return removed
