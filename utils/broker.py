"""The owner of the broker: connecting, declaring queues, consuming, confirmed copies, back-off.

It is the one module that names pika's exceptions: emitter/ drives pika's asynchronous
publisher itself, and asks this module what its errors mean. Every function and class
here raises only the errors of utils.errors: ConnectionLost when the connection or
channel goes, PublishRefused when the broker will not take a confirmed copy, and the
named errors for a broker that cannot be reached, a refused login, or a queue we cannot
use. Code elsewhere that drives a channel itself (the worker's consumer, `tasks purge`)
does so inside queue_errors() or Channel.errors(), which turn pika's errors into ours.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from utils.errors import (
    AccessRefused,
    BrokerUnavailable,
    ChannelClosed,
    ConnectionLost,
    PublishRefused,
    QueueMismatch,
    QueueNotFound,
    TaskToolError,
)
from utils.management import ensure_task_policy
from utils.queues import (
    DELIVERY_LIMIT,
    QueueInfo,
    consumer_timeout_argument,
    dead_letter_name,
    queue_arguments,
    task_policy,
)
from utils.settings import Settings, TlsFiles, mask_url, url_host, url_vhost
from utils.task import copy_properties

__all__ = ["DELIVERY_LIMIT", "QueueInfo", "dead_letter_name", "queue_arguments"]

log = logging.getLogger(__name__)

#: pika's errors after which this connection or channel cannot be used any more; reconnecting
#: may help. They never leave this module: _lost() turns them into ConnectionLost.
_LOST_ERRORS: tuple[type[BaseException], ...] = (
    px.AMQPConnectionError,
    px.ConnectionClosed,
    px.StreamLostError,
    px.ChannelWrongStateError,
    px.ConnectionWrongStateError,
    px.AMQPHeartbeatTimeout,
    px.ChannelClosed,
    ConnectionError,
    socket.timeout,
)
#: The broker's reply code for a consumer that held a message past consumer_timeout,
#: and for arguments that do not match an existing queue.
PRECONDITION_FAILED = 406
NOT_FOUND = 404

#: A delivery as pika hands it over: (method with delivery_tag and redelivered, properties, body).
Delivery = tuple[Any, Any, bytes]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _lost(exc: BaseException) -> ConnectionLost:
    """Our error for one of pika's lost-connection errors, with the broker's reason."""
    reason = plain_reason(exc) or type(exc).__name__
    timeout = consumer_timeout_of(exc)
    if isinstance(exc, px.ChannelClosed) and timeout is None:
        reason = "the broker closed the channel: " + reason
    return ConnectionLost(reason, "", getattr(exc, "reply_code", None), consumer_timeout=timeout)


#: How long a broker operation may wait for its answer before we drop the connection.
#: pika's blocking calls have no time limit, and a RabbitMQ 4 node can leave one unanswered
#: for good: a queue.declare on a quorum queue whose leader was just killed, say.
ANSWER_WITHIN = 15.0


class NoAnswer(px.AMQPConnectionError):
    """The broker did not answer an operation in time, so we dropped the connection."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the broker did not answer"


@contextlib.contextmanager
def answer_within(
    connection: pika.BlockingConnection, what: str, seconds: float | None = None
) -> Iterator[None]:
    """Drop the connection if the operation inside does not end within `seconds`.

    The operation then raises NoAnswer (one of pika's connection errors, so it becomes
    ConnectionLost like any other lost connection, and callers reconnect or say so).
    """
    impl = getattr(connection, "_impl", None)  # pika's connection, whose I/O loop we wait in
    if impl is None or not connection.is_open:
        yield
        return
    limit = ANSWER_WITHIN if seconds is None else seconds

    def expire() -> None:
        log.debug("no answer to %s within %g s: dropping the connection", what, limit)
        impl._terminate_stream(
            NoAnswer(
                f"the broker did not answer {what} within {limit:g} s (a quorum queue "
                "that just lost its leader can stall a node's answers)"
            )
        )

    timer = impl._adapter_call_later(limit, expire)
    try:
        yield
    finally:
        impl._adapter_remove_timeout(timer)  # harmless once it has fired


def _our_errors(f: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let a broker operation raise only our errors: a lost connection is ConnectionLost,
    and so is a broker that does not answer within ANSWER_WITHIN (see answer_within)."""

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            with answer_within(args[0], f.__name__):
                return f(*args, **kwargs)
        except _LOST_ERRORS as exc:
            raise _lost(exc) from None

    return wrapper


class Backoff:
    """Reconnect delays: jittered (half to all of the delay), doubling, capped at `cap`."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._delay = first

    def next(self) -> float:
        """The next wait, in seconds; each call doubles the delay up to the cap."""
        wait = min(self.cap, self._delay) * (0.5 + random.random() / 2)
        self._delay = min(self.cap, self._delay * 2)
        return wait

    def reset(self) -> None:
        """Start again from the first delay (after a connection that lasted)."""
        self._delay = self.first


def quiet_pika() -> None:
    """pika logs every connection step at INFO; we write our own lines instead."""
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def parameters(
    url: str,
    *,
    heartbeat: int | None = None,
    client_name: str = "",
    blocked_timeout: float | None = None,
    tls: TlsFiles | None = None,
) -> pika.URLParameters:
    """pika connection parameters for one URL, with our time-outs (and TLS for amqps://)."""
    try:
        params = pika.URLParameters(url)
    except Exception as exc:  # pika raises several types for a malformed URL
        raise TaskToolError(
            f"'{mask_url(url)}' is not a valid AMQP URL ({exc})",
            "use the form amqp://USER:PASSWORD@HOST:PORT/VHOST (the default vhost / is %2F)",
        ) from None
    if heartbeat is not None:
        params.heartbeat = heartbeat
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    if blocked_timeout is not None:
        params.blocked_connection_timeout = blocked_timeout
    if client_name:
        params.client_properties = {"connection_name": client_name}
    if urlsplit(url).scheme == "amqps":
        params.ssl_options = pika.SSLOptions(tls_context(tls or TlsFiles()), params.host)
    return params


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """A client TLS context that verifies the broker against --ca-cert (or the system CAs)."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_cert) if tls.ca_cert else None)
        if tls.client_cert:
            ctx.load_cert_chain(
                str(tls.client_cert), str(tls.client_key) if tls.client_key else None
            )
    except (OSError, ssl.SSLError) as exc:
        raise TaskToolError(
            f"cannot use the TLS files given: {exc}",
            "--ca-cert, --client-cert and --client-key take PEM files (the key unencrypted)",
        ) from None
    return ctx


def explain_connect_error(exc: BaseException, url: str) -> TaskToolError:
    """Turn whatever pika or the socket raised while connecting into one of our errors."""
    where = url_host(url)
    user = urlsplit(url).username or "guest"
    if isinstance(exc, (px.ProbableAuthenticationError, px.AuthenticationError)):
        return AccessRefused(
            f"the broker at {where} refused the login of user '{user}'",
            "check the user and password in AMQP_URL or --url; RabbitMQ's guest user may "
            "only log in from localhost (see README, 'Workers on other machines')",
        )
    if isinstance(exc, px.ProbableAccessDeniedError):
        vhost = url_vhost(url)
        return AccessRefused(
            f"vhost '{vhost}' does not exist at {where}, or user '{user}' may not use it",
            f"fix the vhost in the URL (the default vhost / is written %2F), or run "
            f"'rabbitmqctl add_vhost {vhost}' and "
            f'\'rabbitmqctl set_permissions -p {vhost} {user} ".*" ".*" ".*"\'',
        )
    if isinstance(exc, px.IncompatibleProtocolError):
        return BrokerUnavailable(
            f"something answers at {where}, but it does not speak AMQP 0-9-1",
            "check the port in AMQP_URL: AMQP is usually 5672 (15672 is the management UI)",
        )
    if isinstance(exc, socket.gaierror):
        return BrokerUnavailable(
            f"unknown host '{urlsplit(url).hostname}'",
            "check the host name in AMQP_URL or --url",
        )
    text = _describe(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return BrokerUnavailable(
            f"the TLS certificate of {where} could not be verified against the trusted CAs",
            "pass the CA that signed the broker's certificate with --ca-cert (env TASK_CA_CERT); "
            "the host name in the URL must match the certificate",
        )
    if "WRONG_VERSION_NUMBER" in text or "UNEXPECTED_EOF" in text or "SSLError" in text:
        return BrokerUnavailable(
            f"the TLS handshake with {where} failed",
            "check that this port speaks TLS (amqps:// is usually port 5671) and, if the broker "
            "asks for one, give a client certificate with --client-cert and --client-key",
        )
    if "refused" in text.lower():
        return BrokerUnavailable(
            f"no broker answers at {where} (connection refused)",
            "start the local one with 'make broker-up', or point AMQP_URL at your RabbitMQ",
        )
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return BrokerUnavailable(
            f"connecting to {where} timed out",
            "check that the host is reachable and that a firewall lets port "
            f"{where.rsplit(':', 1)[1]} through",
        )
    return BrokerUnavailable(
        f"could not connect to {mask_url(url)}: {exc!r}",
        "start the local one with 'make broker-up', or check AMQP_URL",
    )


def _describe(exc: BaseException) -> str:
    """str() of pika's connection errors hides the cause; repr() names it."""
    return f"{exc!s} {exc!r}" + "".join(f" {a!r}" for a in getattr(exc, "args", ()))


class Connection(pika.BlockingConnection):
    """pika's blocking connection, whose close() does nothing to a connection already gone.

    Callers close in `finally:`; on a lost connection pika's close() would raise and hide
    the error that brought them there.
    """

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        """Close the connection if it is still open; a connection already lost stays so."""
        try:
            if self.is_open:
                with answer_within(self, "connection.close"):
                    super().close(reply_code, reply_text)
        except _LOST_ERRORS as exc:
            log.debug("closing a connection that was going anyway: %r", exc)


def connect(
    settings: Settings,
    *,
    heartbeat: int | None = None,
    client_name: str = "",
    blocked_timeout: float | None = None,
) -> tuple[Connection, str]:
    """A blocking connection to the first broker URL that answers (tried in shuffled order)."""
    urls = list(settings.urls)
    if len(urls) > 1:
        random.shuffle(urls)
    last: TaskToolError | None = None
    for url in urls:
        params = parameters(
            url,
            heartbeat=heartbeat if heartbeat is not None else settings.heartbeat,
            client_name=client_name,
            blocked_timeout=blocked_timeout,
            tls=settings.tls,
        )
        try:
            return Connection(params), url
        except (px.AMQPError, OSError) as exc:
            last = explain_connect_error(exc, url)
            if isinstance(last, AccessRefused):
                raise last from None
            log.debug("connect to %s failed: %s", mask_url(url), exc)
    assert last is not None
    if len(urls) > 1:
        last = BrokerUnavailable(
            f"no broker answers at any of {', '.join(url_host(u) for u in settings.urls)}",
            last.hint,
        )
    raise last


def server_version(connection: pika.BlockingConnection) -> tuple[int, ...]:
    """The broker's version, e.g. (4, 0, 5), as it said when we connected (() if it did not)."""
    # BlockingConnection does not pass the server's properties on; the connection it wraps
    # keeps them from Connection.Start.
    props = getattr(getattr(connection, "_impl", None), "server_properties", None) or {}
    raw = props.get("version", b"")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


#: The arguments that name a queue's dead-letter target.
_DEAD_LETTER_ARGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key")
_INEQUIVALENT = re.compile(r"inequivalent arg '(?P<arg>[^']+)'.*current is (?P<current>.*)$")


def _probe(
    connection: pika.BlockingConnection, name: str, arguments: dict[str, Any]
) -> tuple[BlockingChannel, str, str]:
    """Declare an existing queue with these arguments: (channel, "", "") when they match,
    else a fresh channel and the first argument the broker found different, and its value.

    The broker checks a queue's dead-letter arguments before its type, so a 406 about
    x-dead-letter-exchange says nothing of the type.
    """
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
        return channel, "", ""
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise _queue_error(exc, name) from None
        m = _INEQUIVALENT.search(exc.reply_text)
    return connection.channel(), (m["arg"] if m else "?"), (m["current"] if m else "?")


@_our_errors
def declare_queue(
    connection: pika.BlockingConnection, settings: Settings, url: str = ""
) -> tuple[BlockingChannel, QueueInfo]:
    """Make sure the work queue exists, using an existing one as it is where we safely can.

    A quorum queue we create gets a dead-letter target, <queue>.dead, declared with it:
    from our policy where the management API lets us set one, so that the queue is
    declared as the RabbitMQ tutorial declares it (x-queue-type alone) and its scripts
    share it; else from the queue's own arguments, which the tutorial's declaration
    cannot match (docs/DESIGN.md). `url` is the AMQP URL `connection` was opened with.
    Returns an open channel (a 406 or 404 closes the one it happened on) and what we found.
    """
    name = settings.queue
    channel = connection.channel()
    try:
        ok = channel.queue_declare(name, passive=True)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise _queue_error(exc, name) from None
        arguments, note = _new_queue_arguments(connection, settings, url or settings.url)
        channel = connection.channel()
        try:
            if settings.queue_type == "quorum":
                _ensure(connection, dead_letter_name(name))
            channel.queue_declare(name, durable=True, arguments=arguments)
        except px.ChannelClosedByBroker as exc2:
            raise _queue_error(exc2, name) from None
        return channel, QueueInfo(name, settings.queue_type, True, 0, 0, note)

    channel.close()
    channel, info = _shape(connection, name, settings.queue_type, ok.method)
    if info.queue_type == "quorum":
        # Where a dead-letter target (ours, or a policy's) sends what the broker gives up on;
        # an operator may have deleted it, and at least once, the broker waits for it.
        _ensure(connection, dead_letter_name(name))
    return channel, info


def _new_queue_arguments(
    connection: pika.BlockingConnection, settings: Settings, url: str
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


@_our_errors
def queue_shape(connection: pika.BlockingConnection, name: str) -> QueueInfo | None:
    """What declare_queue would find of an existing queue (None when there is none); it
    creates nothing."""
    counts = _passive(connection, name)
    if counts is None:
        return None
    channel, info = _shape(connection, name, "quorum", counts)
    channel.close()
    return info


def _passive(connection: pika.BlockingConnection, name: str) -> Any:
    """A queue's Queue.DeclareOk (message and consumer counts), or None when there is none."""
    channel = connection.channel()
    try:
        ok = channel.queue_declare(name, passive=True)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return None
        raise _queue_error(exc, name) from None
    channel.close()
    return ok.method


def _shape(
    connection: pika.BlockingConnection, name: str, wanted: str, counts: Any
) -> tuple[BlockingChannel, QueueInfo]:
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


@_our_errors
def queue_counts(connection: pika.BlockingConnection, name: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of a queue, or None when it does not exist; creates nothing."""
    counts = _passive(connection, name)
    return None if counts is None else (counts.message_count, counts.consumer_count)


@_our_errors
def probe_queue_type(connection: pika.BlockingConnection, name: str) -> str:
    """The type of an existing queue (quorum, classic, stream), or "unknown".

    AMQP cannot ask for it; declaring it as a quorum queue either matches or fails with a
    406 that names the type it has. Call it only on a queue known to exist.
    """
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    except px.ChannelClosedByBroker as exc:
        m = _INEQUIVALENT.search(exc.reply_text)
        if exc.reply_code == PRECONDITION_FAILED and m and m["arg"] == "x-queue-type":
            return _found_type(m["current"])
        if exc.reply_code == PRECONDITION_FAILED and m and m["arg"] in _DEAD_LETTER_ARGS:
            # The broker checks dead-letter arguments before the type: only a quorum queue
            # of ours has them with these values, so try that declaration.
            channel = connection.channel()
            try:
                channel.queue_declare(name, durable=True, arguments=queue_arguments("quorum", name))
            except px.ChannelClosedByBroker:
                return "unknown"
            channel.close()
            return "quorum"
        return "unknown"
    channel.close()
    return "quorum"


@_our_errors
def ensure_queue(connection: pika.BlockingConnection, name: str) -> None:
    """Make sure a durable side queue (e.g. `<queue>.dead`) exists, as it is if it does."""
    _ensure(connection, name)


def _ensure(connection: pika.BlockingConnection, name: str) -> None:
    try:
        channel = connection.channel()
        channel.queue_declare(name, passive=True)
        channel.close()
        return
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise _queue_error(exc, name) from None
    channel = connection.channel()
    channel.queue_declare(name, durable=True)
    channel.close()


def publish_copy(
    connection: pika.BlockingConnection,
    queue: str,
    body: bytes,
    properties: Any,
    headers: dict[str, Any],
    *,
    declare: bool = False,
) -> None:
    """Publish a persistent copy of a message to `queue`, and wait for the broker's confirm.

    On a confirm channel, mandatory: returns only once the copy is safe, so the caller may
    then ack the original. `declare` first makes sure the queue exists (ensure_queue).
    Raises PublishRefused when the broker nacks or returns the copy, ConnectionLost when
    the connection or channel goes.
    """
    try:
        if declare:
            ensure_queue(connection, queue)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, copy_properties(properties, headers), mandatory=True)
        channel.close()
    except px.UnroutableError:
        raise PublishRefused(
            f"the broker returned a copy sent to queue '{queue}': no such queue",
            "the queue was deleted meanwhile; run again to declare it",
        ) from None
    except px.NackError:
        raise PublishRefused(
            f"the broker refused (nacked) a copy sent to queue '{queue}'",
            "a queue length limit or a broker alarm refuses messages; make room, then retry",
        ) from None
    except _LOST_ERRORS as exc:
        raise _lost(exc) from None


@contextlib.contextmanager
def queue_errors(name: str) -> Iterator[None]:
    """Within it, pika's errors become ours: the broker closing the channel over queue `name`
    is the queue error it means (exclusive, access refused...), and a lost connection or
    channel is ConnectionLost. For code outside this module that drives a channel itself."""
    try:
        yield
    except px.ChannelClosedByBroker as exc:
        raise _queue_error(exc, name) from None
    except _LOST_ERRORS as exc:
        raise _lost(exc) from None


class Channel:
    """A channel whose calls raise only our errors: ack, nack and reject, and basic_get."""

    def __init__(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        self.connection = connection
        self._channel = channel
        #: Set once this channel must not be used any more, though pika still has it open
        #: (RabbitMQ 4.3 cancelled our consumer on a consumer_timeout): every call raises it.
        self._unusable: ConnectionLost | None = None

    def _lost_error(self, exc: BaseException | None = None) -> ConnectionLost:
        """ConnectionLost for this channel, with the broker's reason when the broker closed it."""
        if self._unusable is not None:
            return self._unusable
        if exc is None or isinstance(exc, px.ChannelWrongStateError):
            # pika raises "Channel is closed." and keeps the broker's Channel.Close (its
            # code and text, such as a consumer_timeout) only on a private attribute.
            reason = getattr(self._channel, "_closing_reason", None)
            if isinstance(reason, px.ChannelClosedByBroker):
                return _lost(reason)
        return _lost(exc) if exc is not None else ConnectionLost("the channel was closed")

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Within it, a lost connection or channel is ConnectionLost, with the broker's reason."""
        if self._unusable is not None:
            raise self._unusable
        try:
            yield
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge one delivery (`multiple`: and every earlier one still unacked)."""
        with self.errors():
            self._channel.basic_ack(tag, multiple=multiple)

    def reject(self, tag: int) -> None:
        """Give one delivery back to its queue: a failed delivery, which a quorum queue counts
        on every version (x-delivery-count; from 4.3 a nack counts only as a return)."""
        with self.errors():
            self._channel.basic_reject(tag, requeue=True)

    def give_back_all(self) -> None:
        """Give every delivery this channel holds unacked back to its queue."""
        with self.errors():
            self._channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)

    def get(self, queue: str) -> Delivery | None:
        """Take one message from `queue`, unacked (basic_get); None when it is empty."""
        with self.errors():
            method, properties, body = self._channel.basic_get(queue, auto_ack=False)
        return None if method is None else (method, properties, body)


@_our_errors
def open_channel(connection: pika.BlockingConnection) -> Channel:
    """A new channel on the connection."""
    return Channel(connection, connection.channel())


class Consuming(Channel):
    """A channel consuming one queue or stream: `deliveries` are buffered for the caller.

    pump() runs pika's I/O (heartbeats included) and fills `deliveries`; the caller takes
    them one at a time. The worker's consumer (worker/consumer.py) builds on it, and so does
    the reader of the event stream (inspector/stream.py).
    """

    def __init__(
        self,
        connection: pika.BlockingConnection,
        queue: str,
        channel: BlockingChannel | None = None,
    ) -> None:
        with queue_errors(queue):
            super().__init__(connection, channel or connection.channel())
        self.queue = queue
        self.deliveries: deque[Delivery] = deque()
        self._tag: str | None = None
        self._cancelled_by_broker = False

    def start(self, prefetch: int, arguments: dict[str, Any] | None = None) -> None:
        """Consume the queue with this prefetch (and consumer `arguments`)."""
        with queue_errors(self.queue), answer_within(self.connection, "basic.consume"):
            # A stream refuses a consumer without a prefetch.
            self._channel.basic_qos(prefetch_count=prefetch)
            self._tag = self._channel.basic_consume(
                self.queue, self._on_delivery, arguments=arguments
            )
        # The broker cancels our consumer when the queue is deleted (or its node is
        # lost); without this we would wait for deliveries that can never come.
        self._channel.add_on_cancel_callback(self._on_broker_cancel)

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.deliveries.append((method, properties, body))

    def _on_broker_cancel(self, frame: Any) -> None:
        self._cancelled_by_broker = True

    def pump(self, seconds: float | None = None) -> None:
        """Process broker events: for up to `seconds`, or (None) until the next event.

        Raises ConnectionLost when the connection or channel is gone (the broker has taken
        back what it delivered on it, so the deliveries not yet taken cannot be acked
        either), or when the broker cancelled our consumer (see broker_cancelled).
        """
        with self.errors():
            self.connection.process_data_events(time_limit=seconds)
        # pika's process_data_events() does not raise for a channel the broker closed (a
        # consumer_timeout, say): a task still running learns of it here, within a pump.
        if not self._channel.is_open:
            raise self._lost_error()
        if self._cancelled_by_broker:
            lost = self.broker_cancelled()
            if lost is not None:
                raise lost

    def broker_cancelled(self) -> ConnectionLost | None:
        """What the broker's basic.cancel of our consumer means: the error to raise, or None
        while deliveries already here (which can still be acked) wait to be taken.

        basic.cancel carries no cause. A queue deleted, or (before RabbitMQ 4) lost with its
        node, cancels consumers; the worker's consumer tells a consumer_timeout apart.
        """
        if self.deliveries:
            return None
        return ConnectionLost(
            "the broker cancelled our consumer: the queue was deleted, or the node "
            "holding it went away; declaring it again"
        )

    def make_unusable(self, why: ConnectionLost) -> ConnectionLost:
        """From now on every call on this channel raises `why` (returned, to raise now)."""
        self._unusable = why
        return why


def _queue_error(exc: px.ChannelClosedByBroker, name: str) -> TaskToolError:
    if exc.reply_code == 405:
        return QueueMismatch(
            f"queue '{name}' is exclusive to another connection",
            "pick another name with --queue / TASK_QUEUE",
        )
    if exc.reply_code == 403:
        return AccessRefused(
            f"the broker refused access to queue '{name}': {exc.reply_text}",
            "grant this user configure, write and read permissions on the queue "
            "(rabbitmqctl set_permissions)",
        )
    if exc.reply_code == NOT_FOUND:
        return QueueNotFound(f"queue '{name}' is not there: {plain_reason(exc)}", "")
    return ChannelClosed(f"the broker closed the channel: {plain_reason(exc)}", "")


#: RabbitMQ's words when it closes a channel that held a delivery past consumer_timeout:
#: "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value
#: used: 3000 ms. ..." (3.10 and 4.0 alike; older versions name no value).
_ACK_TIMED_OUT = re.compile(r"delivery acknowledgement (?:on channel \d+ )?timed out", re.I)
_TIMEOUT_USED = re.compile(r"Timeout value used: (\d+) ms")


def consumer_timeout_of(exc: BaseException) -> float | None:
    """The broker's consumer_timeout in seconds (0.0 when it named none) when it closed the
    channel because a delivery went unacknowledged that long; None for any other reason."""
    text = getattr(exc, "reply_text", "") or ""
    if getattr(exc, "reply_code", None) != PRECONDITION_FAILED or not _ACK_TIMED_OUT.search(text):
        return None
    m = _TIMEOUT_USED.search(text)
    return int(m[1]) / 1000 if m else 0.0


def timed_out(seconds: float, after: float | None = None) -> ConnectionLost:
    """ConnectionLost for a consumer_timeout that RabbitMQ 4.3 signalled with basic.cancel:
    of `seconds` (0: unknown; then `after`, the time the task had run, says how long)."""
    value = f" ({seconds:g} s)" if seconds else ""
    ran = f" after {after:.0f} s" if not seconds and after is not None else ""
    return ConnectionLost(
        f"the broker's consumer_timeout{value} ran out{ran}: it has given this task back to "
        "the queue",
        "",
        PRECONDITION_FAILED,
        consumer_timeout=seconds,
    )


def plain_reason(exc: BaseException) -> str:
    """What the broker said when it closed a channel or connection, in plain words."""
    code = getattr(exc, "reply_code", None)
    text = getattr(exc, "reply_text", "") or str(exc)
    timeout = consumer_timeout_of(exc)
    if timeout is not None:
        value = f" ({timeout:g} s)" if timeout else ""
        return (
            f"the broker's consumer_timeout{value} ran out: it has given this task back to "
            "the queue"
        )
    if code == NOT_FOUND:
        return f"the queue is gone ({text})"
    if code == 320:
        return f"the broker is shutting down or an operator closed the connection ({text})"
    return f"{code} {text}" if code else text


def is_access_refused(exc: BaseException) -> bool:
    """True for errors that a retry cannot fix (wrong password, no such vhost)."""
    return isinstance(
        exc, (px.ProbableAuthenticationError, px.ProbableAccessDeniedError, px.AuthenticationError)
    )


def is_blocked_timeout(exc: BaseException) -> bool:
    """True when pika closed the connection because the broker blocked us too long."""
    return isinstance(exc, px.ConnectionBlockedTimeout)


# -- streams: the event log on the broker (utils/events.py writes it, inspector/stream.py reads) --
def stream_arguments(max_age: str, max_bytes: int, segment_bytes: int) -> dict[str, Any]:
    """The arguments we declare a new stream with: bounded by age and by size."""
    return {
        "x-queue-type": "stream",
        "x-max-age": max_age,
        "x-max-length-bytes": max_bytes,
        # Retention drops whole segments: smaller ones keep the stream nearer its bound.
        "x-stream-max-segment-size-bytes": segment_bytes,
    }


@_our_errors
def stream_exists(connection: pika.BlockingConnection, name: str) -> bool:
    """True when a queue of this name exists (of any type); creates nothing."""
    return queue_counts(connection, name) is not None


@_our_errors
def declare_stream(
    connection: pika.BlockingConnection, name: str, arguments: dict[str, Any]
) -> str:
    """Make sure the stream `name` exists: create it with `arguments`, or use it as it is.

    Returns "created" or "found". Raises QueueMismatch when a queue of that name exists but
    is not a stream (it could not keep a replayable history).
    """
    if stream_exists(connection, name):
        found = probe_queue_type(connection, name)
        if found not in ("stream", "unknown"):
            raise QueueMismatch(
                f"queue '{name}' exists as a {found} queue, not a stream: it cannot keep "
                "the event history",
                f"delete it ('scripts/broker ctl delete_queue {name}'), or run with --no-events",
            )
        return "found"
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code == PRECONDITION_FAILED:  # another process created it meanwhile
            return "found"
        raise _queue_error(exc, name) from None
    channel.close()
    return "created"


class StreamPublisher:
    """A confirm-mode channel that publishes whole messages to one stream.

    publish() returns once the broker has confirmed the message (so it is written, and on a
    cluster replicated): call it from a thread of its own, never on a task's path.
    """

    def __init__(self, connection: pika.BlockingConnection, name: str) -> None:
        self.connection = connection
        self.name = name
        try:
            self._channel = connection.channel()
            self._channel.confirm_delivery()
        except _LOST_ERRORS as exc:
            raise _lost(exc) from None

    def publish(
        self,
        body: bytes,
        message_id: str,
        kind: str,
        headers: dict[str, Any],
        within: float | None = None,
    ) -> None:
        """Publish one message and wait for its confirm, up to `within` seconds (default
        ANSWER_WITHIN; then ConnectionLost); PublishRefused when nacked."""
        props = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="text/plain",
            content_encoding="utf-8",
            message_id=message_id,
            type=kind,
            headers=headers,
        )
        try:
            with answer_within(self.connection, f"a publish to stream '{self.name}'", within):
                self._channel.basic_publish("", self.name, body, props, mandatory=True)
        except px.UnroutableError:
            raise PublishRefused(
                f"the broker returned an event batch sent to '{self.name}': no such stream",
                "it was deleted meanwhile; it is declared again on the next connection",
            ) from None
        except px.NackError:
            raise PublishRefused(
                f"the broker refused (nacked) an event batch sent to '{self.name}'", ""
            ) from None
        except _LOST_ERRORS as exc:
            raise _lost(exc) from None

    def pump(self, seconds: float) -> None:
        """Process broker events (heartbeats) for up to `seconds`."""
        try:
            self.connection.process_data_events(time_limit=seconds)
        except _LOST_ERRORS as exc:
            raise _lost(exc) from None
        if not self._channel.is_open:
            raise ConnectionLost("the broker closed the event stream's channel")
