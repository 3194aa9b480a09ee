"""pika's exceptions turned into ours (utils/errors.py): the one module that names them.

Every other module of the wing, and so every caller of it, sees only our errors:
ConnectionLost when a connection or channel goes (BlockedTooLong when the broker blocked
us past --blocked-timeout), PublishRefused when the broker will not take a confirmed
publish, the named errors for a broker that cannot be reached, a refused login or a queue
we cannot use, and a plain `Refusal` (the broker's code and text) where a caller decides
on them itself: probing an existing queue's shape, say (utils/rabbitmq/queues.py).
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import pika.exceptions as px

from utils.errors import (
    AccessRefused,
    BlockedTooLong,
    BrokerUnavailable,
    ChannelClosed,
    ConnectionLost,
    PublishRefused,
    QueueMismatch,
    QueueNotFound,
    TaskToolError,
)
from utils.settings import mask_url, url_host, url_vhost

_R = TypeVar("_R")

#: pika's errors after which this connection or channel cannot be used any more; reconnecting
#: may help. They never leave this module: lost() turns them into ConnectionLost.
LOST_ERRORS: tuple[type[BaseException], ...] = (
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
#: What opening a connection may raise: pika's errors and the socket's.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (px.AMQPError, OSError)

#: The broker's reply codes we tell apart: arguments that do not match an existing queue
#: (and a consumer that held a message past consumer_timeout), no such queue, no access.
PRECONDITION_FAILED = 406
NOT_FOUND = 404
ACCESS_REFUSED = 403


class NoAnswer(px.AMQPConnectionError):
    """The broker did not answer an operation in time, so we dropped the connection
    (utils/rabbitmq/internals.py answer_within); a lost connection like any other."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the broker did not answer"


@dataclass(frozen=True)
class Refusal:
    """The broker closed a channel over an operation: its reply code and text."""

    reply_code: int
    reply_text: str


def refused(call: Callable[[], _R]) -> _R | Refusal:
    """call()'s result, or the broker's Refusal when it closes the channel over it."""
    try:
        return call()
    except px.ChannelClosedByBroker as exc:
        return Refusal(exc.reply_code, exc.reply_text)


def lost(exc: BaseException) -> ConnectionLost:
    """Our error for one of pika's lost-connection errors, with the broker's reason."""
    if isinstance(exc, px.ConnectionBlockedTimeout):
        return BlockedTooLong("the broker blocked this connection too long (a resource alarm)")
    reason = plain_reason(exc) or type(exc).__name__
    timeout = consumer_timeout_of(exc)
    if isinstance(exc, px.ChannelClosed) and timeout is None:
        reason = "the broker closed the channel: " + reason
    return ConnectionLost(reason, "", getattr(exc, "reply_code", None), consumer_timeout=timeout)


def channel_lost(exc: BaseException | None, closing_reason: object) -> ConnectionLost:
    """ConnectionLost for a channel: the broker's own Channel.Close (`closing_reason`, as
    pika kept it) when pika raised only "Channel is closed." or nothing at all."""
    wrong_state = exc is None or isinstance(exc, px.ChannelWrongStateError)
    if wrong_state and isinstance(closing_reason, px.ChannelClosedByBroker):
        return lost(closing_reason)
    return lost(exc) if exc is not None else ConnectionLost("the channel was closed")


@contextlib.contextmanager
def lost_errors() -> Iterator[None]:
    """Within it, a lost connection or channel is ConnectionLost, with the broker's reason."""
    try:
        yield
    except LOST_ERRORS as exc:
        raise lost(exc) from None


@contextlib.contextmanager
def queue_errors(name: str) -> Iterator[None]:
    """Within it, the broker closing the channel over queue `name` is the queue error it
    means (exclusive, access refused...), and a lost connection or channel is ConnectionLost."""
    try:
        yield
    except px.ChannelClosedByBroker as exc:
        raise queue_error(exc, name) from None
    except LOST_ERRORS as exc:
        raise lost(exc) from None


@contextlib.contextmanager
def confirm_errors(returned: PublishRefused, nacked: PublishRefused) -> Iterator[None]:
    """Within it, a confirmed publish the broker returns (unroutable) raises `returned`, one
    it nacks raises `nacked`, and a lost connection or channel is ConnectionLost."""
    try:
        yield
    except px.UnroutableError:
        raise returned from None
    except px.NackError:
        raise nacked from None
    except LOST_ERRORS as exc:
        raise lost(exc) from None


def queue_error(exc: px.ChannelClosedByBroker | Refusal, name: str) -> TaskToolError:
    """The error a channel closed over queue `name` means."""
    if exc.reply_code == 405:
        return QueueMismatch(
            f"queue '{name}' is exclusive to another connection",
            "pick another name with --queue / TASK_QUEUE",
        )
    if exc.reply_code == ACCESS_REFUSED:
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


def consumer_timeout_of(exc: BaseException | Refusal) -> float | None:
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


def plain_reason(exc: BaseException | Refusal) -> str:
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


def connecting(url: str, call: Callable[[], _R]) -> _R:
    """call(), which opens a connection to `url`; what pika or the socket raised is ours."""
    try:
        return call()
    except _CONNECT_ERRORS as exc:
        raise explain_connect_error(exc, url) from None


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
