"""The one module that talks to pika: connecting, declaring the queue, and naming failures.

No other module imports pika.exceptions; they catch the tuples exported here and the
errors from utils.errors.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from utils.errors import (
    AccessRefused,
    BrokerUnavailable,
    ChannelClosed,
    QueueMismatch,
    TaskToolError,
)
from utils.settings import Settings, TlsFiles, mask_url, url_host, url_vhost

log = logging.getLogger(__name__)

#: Errors that mean "the connection or channel is gone; reconnecting may help".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    px.AMQPConnectionError,
    px.ConnectionClosed,
    px.StreamLostError,
    px.ChannelWrongStateError,
    px.ConnectionWrongStateError,
    px.AMQPHeartbeatTimeout,
    ConnectionError,
    socket.timeout,
)
#: A confirmed publish that the broker returned (unroutable) or refused (nack).
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (px.UnroutableError, px.NackError)
#: The broker closed a channel (the error carries its reply code and text).
CHANNEL_CLOSED_ERRORS: tuple[type[BaseException], ...] = (px.ChannelClosed,)
#: Anything after which this connection or channel cannot be used any more.
LOST_ERRORS: tuple[type[BaseException], ...] = CONNECTION_ERRORS + CHANNEL_CLOSED_ERRORS
#: The broker's reply code for a consumer that held a message past consumer_timeout,
#: and for arguments that do not match an existing queue.
PRECONDITION_FAILED = 406
NOT_FOUND = 404


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


def connect(
    settings: Settings,
    *,
    heartbeat: int | None = None,
    client_name: str = "",
    blocked_timeout: float | None = None,
) -> tuple[pika.BlockingConnection, str]:
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
            return pika.BlockingConnection(params), url
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


def purge_queue(connection: pika.BlockingConnection, name: str) -> int:
    """Remove every ready message from a queue; returns how many went."""
    channel = connection.channel()
    try:
        ok = channel.queue_purge(name)
    except px.ChannelClosedByBroker as exc:
        raise _queue_error(exc, name) from None
    channel.close()
    return int(ok.method.message_count)


def ensure_queue(connection: pika.BlockingConnection, name: str) -> None:
    """Make sure a durable side queue (e.g. `<queue>.dead`) exists, as it is if it does."""
    try:
        channel = connection.channel()
        channel.queue_declare(name, passive=True)
        channel.close()
        return
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise
    connection.channel().queue_declare(name, durable=True)


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
