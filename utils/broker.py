"""The owner of the broker: connecting, declaring queues, consuming, confirmed copies, back-off.

It is the one module that names pika's exceptions: emitter/ drives pika's asynchronous
publisher itself, and asks this module what its errors mean. Every function and class
here raises only the errors of utils.errors: ConnectionLost when the connection or
channel goes, PublishRefused when the broker will not take a confirmed copy, and the
named errors for a broker that cannot be reached, a refused login, or a queue we cannot
use.
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
from collections.abc import Callable
from dataclasses import dataclass
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
    TaskToolError,
)
from utils.fastack import open_fast_ack
from utils.settings import Settings, TlsFiles, mask_url, url_host, url_vhost
from utils.task import copy_properties

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
    if isinstance(exc, px.ChannelClosed):
        reason = "the broker closed the channel: " + reason
    return ConnectionLost(reason, "", getattr(exc, "reply_code", None))


def _our_errors(f: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let a broker operation raise only our errors: a lost connection is ConnectionLost."""

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return f(*args, **kwargs)
        except _LOST_ERRORS as exc:
            raise _lost(exc) from None

    return wrapper


def dead_letter_name(queue: str) -> str:
    """The dead-letter queue of a work queue: `<queue>.dead`."""
    return f"{queue}.dead"


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


@dataclass(frozen=True)
class QueueInfo:
    """What we learnt about the work queue while declaring it."""

    name: str
    queue_type: str  # quorum, classic, or "as it is" when the broker did not say
    created: bool
    messages: int
    consumers: int
    note: str = ""


_INEQUIVALENT = re.compile(r"inequivalent arg '(?P<arg>[^']+)'.*current is (?P<current>.*)$")


def queue_arguments(queue_type: str) -> dict[str, Any]:
    """The arguments we declare a new work queue with."""
    return {"x-queue-type": queue_type}


@_our_errors
def declare_queue(
    connection: pika.BlockingConnection, settings: Settings
) -> tuple[BlockingChannel, QueueInfo]:
    """Make sure the work queue exists, using an existing one as it is where we safely can.

    Returns an open channel (a 406 or 404 closes the one it happened on) and what we found.
    """
    name = settings.queue
    channel = connection.channel()
    try:
        ok = channel.queue_declare(name, passive=True)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise _queue_error(exc, name) from None
        channel = connection.channel()
        try:
            ok = channel.queue_declare(
                name, durable=True, arguments=queue_arguments(settings.queue_type)
            )
        except px.ChannelClosedByBroker as exc2:
            raise _queue_error(exc2, name) from None
        return channel, QueueInfo(name, settings.queue_type, True, 0, 0)

    # It exists. Probe its shape with the declaration we would have made; a 406 names the
    # first argument that differs and what the queue has instead.
    messages, consumers = ok.method.message_count, ok.method.consumer_count
    try:
        channel.queue_declare(name, durable=True, arguments=queue_arguments(settings.queue_type))
        return channel, QueueInfo(name, settings.queue_type, False, messages, consumers)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise _queue_error(exc, name) from None
        text = exc.reply_text
    channel = connection.channel()
    m = _INEQUIVALENT.search(text)
    arg, current = (m["arg"], m["current"]) if m else ("?", "?")
    if arg in ("durable", "auto_delete", "exclusive"):
        raise QueueMismatch(
            f"queue '{name}' already exists but is not a durable, shared queue "
            f"({arg} is {current}): its tasks would not survive a broker restart",
            f"delete it ('tasks purge' empties it; 'scripts/broker ctl delete_queue {name}' "
            f"removes it) or pick another name with --queue / TASK_QUEUE",
        )
    if arg == "x-queue-type":
        found = _found_type(current)
        if found == "stream":
            raise QueueMismatch(
                f"queue '{name}' is a stream, which cannot serve as a work queue",
                "pick another name with --queue / TASK_QUEUE",
            )
        note = f"queue '{name}' exists as a {found} queue; using it as it is"
        return channel, QueueInfo(name, found, False, messages, consumers, note)
    note = f"queue '{name}' exists with other arguments ({arg}); using it as it is"
    return channel, QueueInfo(name, "as it is", False, messages, consumers, note)


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
    channel = connection.channel()
    try:
        ok = channel.queue_declare(name, passive=True)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return None
        raise _queue_error(exc, name) from None
    channel.close()
    return ok.method.message_count, ok.method.consumer_count


@_our_errors
def probe_queue_type(connection: pika.BlockingConnection, name: str) -> str:
    """The type of an existing queue (quorum, classic, stream), or "unknown".

    AMQP cannot ask for it; declaring it as a quorum queue either matches or fails with a
    406 that names the type it has. Call it only on a queue known to exist.
    """
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments=queue_arguments("quorum"))
    except px.ChannelClosedByBroker as exc:
        m = _INEQUIVALENT.search(exc.reply_text)
        if exc.reply_code == PRECONDITION_FAILED and m and m["arg"] == "x-queue-type":
            return _found_type(m["current"])
        return "unknown"
    channel.close()
    return "quorum"


@_our_errors
def purge_queue(connection: pika.BlockingConnection, name: str) -> int:
    """Remove every ready message from a queue; returns how many went."""
    channel = connection.channel()
    try:
        ok = channel.queue_purge(name)
    except px.ChannelClosedByBroker as exc:
        raise _queue_error(exc, name) from None
    channel.close()
    return int(ok.method.message_count)


@_our_errors
def ensure_queue(connection: pika.BlockingConnection, name: str) -> None:
    """Make sure a durable side queue (e.g. `<queue>.dead`) exists, as it is if it does."""
    try:
        channel = connection.channel()
        channel.queue_declare(name, passive=True)
        channel.close()
        return
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise _queue_error(exc, name) from None
    connection.channel().queue_declare(name, durable=True)


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


class Channel:
    """A channel whose calls raise only our errors: ack, nack and reject, and basic_get."""

    def __init__(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        self.connection = connection
        self._channel = channel

    def _lost_error(self, exc: BaseException | None = None) -> ConnectionLost:
        """ConnectionLost for this channel, with the broker's reason when the broker closed it."""
        if exc is None or isinstance(exc, px.ChannelWrongStateError):
            # pika raises "Channel is closed." and keeps the broker's Channel.Close (its
            # code and text, such as a consumer_timeout) only on a private attribute.
            reason = getattr(self._channel, "_closing_reason", None)
            if isinstance(reason, px.ChannelClosedByBroker):
                return _lost(reason)
        return _lost(exc) if exc is not None else ConnectionLost("the channel was closed")

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge one delivery (`multiple`: and every earlier one still unacked)."""
        try:
            self._channel.basic_ack(tag, multiple=multiple)
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def nack(self, tag: int) -> None:
        """Give one delivery back to its queue (a quorum queue counts it as a delivery)."""
        try:
            self._channel.basic_nack(tag, requeue=True)
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def reject(self, tag: int) -> None:
        """Give one delivery back to its queue, unfinished."""
        try:
            self._channel.basic_reject(tag, requeue=True)
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def give_back_all(self) -> None:
        """Give every delivery this channel holds unacked back to its queue."""
        try:
            self._channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def get(self, queue: str) -> Delivery | None:
        """Take one message from `queue`, unacked (basic_get); None when it is empty."""
        try:
            method, properties, body = self._channel.basic_get(queue, auto_ack=False)
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None
        return None if method is None else (method, properties, body)


@_our_errors
def open_channel(connection: pika.BlockingConnection) -> Channel:
    """A new channel on the connection."""
    return Channel(connection, connection.channel())


class Consumer(Channel):
    """A channel consuming the work queue: deliveries are buffered for the caller to take.

    pump() runs pika's I/O (heartbeats included) and fills `deliveries`; the caller takes
    them one at a time and settles each with ack, nack or reject.
    """

    def __init__(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        queue: str,
        fast_ack: bool = False,
    ) -> None:
        super().__init__(connection, channel)
        self.queue = queue
        self.deliveries: deque[Delivery] = deque()
        self._tag: str | None = None
        self._cancelled_by_broker = False
        self._dropped = False
        #: Acks written to the socket directly (utils/fastack.py), or None: basic_ack only.
        self._fast = open_fast_ack(connection, channel) if fast_ack else None

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge one delivery (`multiple`: and every earlier one still unacked)."""
        fast = self._fast
        if fast is not None:
            try:
                if fast.ack(tag, multiple):
                    return
            except _LOST_ERRORS as exc:
                raise self._lost_error(exc) from None
        super().ack(tag, multiple)

    def _start(self, prefetch: int) -> None:
        self._channel.basic_qos(prefetch_count=prefetch)
        self._tag = self._channel.basic_consume(self.queue, self._on_delivery)
        # The broker cancels our consumer when the queue is deleted (or its node is
        # lost); without this we would wait for deliveries that can never come.
        self._channel.add_on_cancel_callback(self._on_broker_cancel)

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.deliveries.append((method, properties, body))

    def _on_broker_cancel(self, frame: Any) -> None:
        self._cancelled_by_broker = True

    def pump(self, seconds: float | None = None) -> None:
        """Process broker events: for up to `seconds`, or (None) until the next event.

        Raises ConnectionLost when the connection or channel is gone, or when the broker
        cancelled our consumer (once the deliveries already here are taken).
        """
        try:
            self.connection.process_data_events(time_limit=seconds)
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None
        if not self.deliveries:  # (what came is taken first; a closed channel fails its ack)
            if self._cancelled_by_broker:
                raise ConnectionLost(
                    "the broker cancelled our consumer: the queue was deleted, or the node "
                    "holding it went away; declaring it again"
                )
            # pika's process_data_events() does not raise for a channel the broker closed.
            if not self._channel.is_open:
                raise self._lost_error()

    def wake_every(self, seconds: float) -> None:
        """Make pump(None) return at least every `seconds`, for as long as the connection is open.

        With this timer in place, waiting for a delivery needs no time limit, which spares
        pika a timer per wait (a measurable share of a very short task's cost).
        """
        conn = self.connection

        def wake() -> None:
            if conn.is_open and not self._dropped:
                conn.call_later(seconds, wake)

        conn.call_later(seconds, wake)

    def cancel(self) -> None:
        """Stop the deliveries, and give back those that came but were not taken yet."""
        if self._tag is None:
            return
        tag, self._tag = self._tag, None
        if not (self.connection.is_open and self._channel.is_open):
            raise self._lost_error()  # pika asserts on cancelling a consumer of a closed channel
        try:
            leftovers = self._channel.basic_cancel(tag)
            for _ch, method, _props, _body in leftovers or ():
                self._channel.basic_nack(method.delivery_tag, requeue=True)
            for method, _props, _body in self.deliveries:
                self._channel.basic_nack(method.delivery_tag, requeue=True)
            self.deliveries.clear()
        except _LOST_ERRORS as exc:
            raise self._lost_error(exc) from None

    def close(self) -> None:
        """Cancel the consumer and close the connection; never raises."""
        with contextlib.suppress(ConnectionLost):  # closing gives back what we hold anyway
            self.cancel()
        self.drop()

    def drop(self) -> None:
        """Close the connection without a word to the broker first (it is lost, or going)."""
        self._dropped = True
        self._tag = None
        self.deliveries.clear()  # unacked: the broker gives them back
        try:
            self.connection.close()
        except Exception as exc:  # it is going away anyway; nothing of ours is left on it
            log.debug("dropping a connection: %r", exc)


def consume(
    connection: pika.BlockingConnection,
    settings: Settings,
    *,
    prefetch: int,
    fast_ack: bool = False,
) -> tuple[Consumer, QueueInfo]:
    """Declare the work queue (see declare_queue) and consume it with this prefetch.

    `fast_ack`: write acks to the socket directly where it can (utils/fastack.py).
    """
    channel, info = declare_queue(connection, settings)
    consumer = Consumer(connection, channel, settings.queue, fast_ack)
    try:
        consumer._start(prefetch)
    except px.ChannelClosedByBroker as exc:
        raise _queue_error(exc, settings.queue) from None
    except _LOST_ERRORS as exc:
        raise _lost(exc) from None
    return consumer, info


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
    return ChannelClosed(f"the broker closed the channel: {plain_reason(exc)}", "")


def plain_reason(exc: BaseException) -> str:
    """What the broker said when it closed a channel or connection, in plain words."""
    code = getattr(exc, "reply_code", None)
    text = getattr(exc, "reply_text", "") or str(exc)
    if code == PRECONDITION_FAILED and "delivery acknowledgement timed out" in text.lower():
        return (
            "the task took longer than the broker's consumer_timeout, so the broker closed "
            "the channel and will redeliver it"
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
