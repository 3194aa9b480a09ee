"""Connecting: pika's parameters from a URL (here only), TLS, failover across the URLs of a
cluster, back-off, the broker's version, and the asynchronous connection emit publishes on.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import ssl
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import urlsplit

import pika

from utils.errors import AccessRefused, BrokerUnavailable, ConnectionLost, TaskToolError
from utils.rabbitmq import internals
from utils.rabbitmq.errors import (
    connecting,
    explain_connect_error,
    lost,
    lost_errors,
)
from utils.settings import Settings, TlsFiles, mask_url, url_host

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def operation(f: Callable[_P, _R]) -> Callable[_P, _R]:
    """A broker operation on a connection (the first argument) that raises only our errors:
    a lost connection is ConnectionLost, and so is a broker that does not answer within
    internals.ANSWER_WITHIN (answer_within)."""

    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with lost_errors(), internals.answer_within(args[0], f.__name__):
            return f(*args, **kwargs)

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


class Connection(pika.BlockingConnection):
    """pika's blocking connection, checked once for the privates we use (internals.check),
    whose close() does nothing to a connection already gone.

    Callers close in `finally:`; on a lost connection pika's close() would raise and hide
    the error that brought them there.
    """

    def __init__(self, params: pika.URLParameters) -> None:
        super().__init__(params)
        self.params = params
        self.checked = internals.check(self)
        internals.log_stepped_aside(self.checked)

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        """Close the connection if it is still open; a connection already lost stays so."""
        try:
            if self.is_open:
                with lost_errors(), internals.answer_within(self, "connection.close"):
                    super().close(reply_code, reply_text)
        except ConnectionLost as exc:
            log.debug("closing a connection that was going anyway: %s", exc.message)


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
            return connecting(url, functools.partial(Connection, params)), url
        except AccessRefused:
            raise
        except TaskToolError as exc:
            last = exc
            log.debug("connect to %s failed: %s", mask_url(url), exc.message)
    assert last is not None
    if len(urls) > 1:
        last = BrokerUnavailable(
            f"no broker answers at any of {', '.join(url_host(u) for u in settings.urls)}",
            last.hint,
        )
    raise last


def server_version(connection: Any) -> tuple[int, ...]:
    """The broker's version, e.g. (4, 0, 5), as it said when we connected (() if unknown)."""
    raw = internals.server_properties(connection).get("version", b"")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


# -- the asynchronous connection emit publishes on --------------------------------------------
class Publishing(Protocol):
    """What an asynchronous publisher hears from its AsyncConnection, all on the I/O loop."""

    def ready(self, link: AsyncConnection) -> None:
        """The confirm-mode channel is open: publish."""

    def confirmed(self, tag: int, multiple: bool, acked: bool) -> None:
        """The broker confirmed (acked) or nacked delivery tag `tag` (`multiple`: and all
        before it)."""

    def returned(self, message_id: str | None) -> None:
        """The broker returned a mandatory message it could not route (its confirm follows)."""

    def lost(self, error: TaskToolError) -> None:
        """The connection or channel went, or never opened (not after close())."""

    def blocked(self, reason: str) -> None:
        """The broker blocks publishing (a resource alarm)."""

    def unblocked(self) -> None:
        """The broker accepts publishes again."""


class AsyncConnection:
    """An asynchronous connection with one confirm-mode channel, for a publisher that keeps
    a window of confirms open (emit): its events go to a Publishing, as our errors.

    It goes on with the blocking connection the caller declared on (internals.async_side),
    so that one connection serves both. Where that private steps aside, the blocking one
    is closed and a second connection opened to the same URL. run() returns once the
    connection is closed (by close()) or lost.
    """

    def __init__(self, connection: Connection, url: str, publisher: Publishing) -> None:
        self.url = url
        self._publisher = publisher
        self._channel: Any = None
        self._closing = False
        self._told = False
        self._done = False  # the connection closed or was lost: run() returns
        impl = internals.async_side(connection)
        self.shared = impl is not None  #: False: a connection of its own (the fallback)
        if impl is None:
            connection.close()
            impl = pika.SelectConnection(
                connection.params,
                on_open_callback=self._open_channel,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
        else:
            impl.add_on_close_callback(self._on_closed)
        #: pika's asynchronous connection, for emitter/fastpath.py.
        self.connection: Any = impl
        impl.add_on_connection_blocked_callback(self._on_blocked)
        impl.add_on_connection_unblocked_callback(self._on_unblocked)

    def run(self) -> None:
        """Run the I/O loop until the connection is closed or lost.

        A blocking connection's loop is driven as BlockingConnection drives it (its poller
        is active already: ioloop.start() would activate it again and fail); a connection
        of its own (the fallback) runs on pika's public ioloop.start(), as before.
        """
        impl = self.connection
        ioloop = impl.ioloop
        try:
            if not self.shared:
                ioloop.start()
            elif not impl.is_open:
                self._tell(ConnectionLost("the connection closed before publishing began"))
            else:
                self._open_channel(impl)
                while not self._done:
                    ioloop.poll()
                    ioloop.process_timeouts()
        finally:
            if impl.is_open:  # an error escaped a callback: leave nothing half-open
                impl.close()
            ioloop.close()

    @property
    def is_open(self) -> bool:
        """True while the channel can publish."""
        channel = self._channel
        return channel is not None and channel.is_open

    @property
    def channel_number(self) -> int:
        """The channel's number (for frames built by emitter/fastpath.py)."""
        return int(self._channel.channel_number)

    def publish(self, queue: str, body: bytes, properties: Any) -> None:
        """Publish one persistent message to `queue` (mandatory: an unroutable one comes back)."""
        self._channel.basic_publish("", queue, body, properties, mandatory=True)

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the I/O loop soon; from any thread."""
        self.connection.ioloop.add_callback_threadsafe(callback)

    def close(self) -> None:
        """Close the connection: done. run() returns once it has closed."""
        self._closing = True
        if self.connection.is_open:
            self.connection.close()

    # -- pika's callbacks ----------------------------------------------------------------------
    def _tell(self, error: TaskToolError) -> None:
        """Tell the publisher of the first loss only (closing after a lost channel is not news)."""
        if not self._closing and not self._told:
            self._told = True
            self._publisher.lost(error)

    def _open_channel(self, impl: Any) -> None:
        impl.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready())

    def _ready(self) -> None:
        self._publisher.ready(self)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        self._publisher.confirmed(method.delivery_tag, method.multiple, acked)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._publisher.returned(properties.message_id)

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        self._tell(lost(reason))
        if self.connection.is_open:
            self.connection.close()

    def _on_open_error(self, impl: Any, exc: BaseException) -> None:
        self._tell(explain_connect_error(exc, self.url))
        self._stop()

    def _on_closed(self, impl: Any, reason: BaseException) -> None:
        self._tell(lost(reason))
        self._stop()

    def _stop(self) -> None:
        self._done = True
        if not self.shared:
            self.connection.ioloop.stop()

    def _on_blocked(self, impl: Any, frame: Any) -> None:
        self._publisher.blocked(getattr(frame.method, "reason", "") or "a resource alarm")

    def _on_unblocked(self, impl: Any, frame: Any) -> None:
        self._publisher.unblocked()
