"""Every use of pika's private internals outside the two fast paths, behind one door.

pika's BlockingConnection keeps from us four things we need; each is reached here, and
nowhere else (the fast paths, emitter/fastpath.py and worker/fastack.py, have doors of
their own):

| feature | the private it uses | why | when its check fails |
|---|---|---|---|
| `answer_within` | `connection._impl` and its `_adapter_call_later`, `_adapter_remove_timeout`, `_terminate_stream` | pika's blocking calls wait for ever, and a RabbitMQ 4 node can leave a queue.declare unanswered for good (a quorum queue that lost its leader) | the operation waits with no limit but pika's heartbeat (as before answer_within) |
| `server_properties` | `connection._impl.server_properties` | BlockingConnection does not pass Connection.Start's properties on: the broker's version decides where a consumer timeout may go | the version is unknown, `()`: the choices that hang on it take their no-version side |
| `closing_reason` | `BlockingChannel._closing_reason` | pika raises "Channel is closed." and keeps the broker's Channel.Close (code and text: a consumer_timeout, say) only there | ConnectionLost says "the broker closed the channel" without its words; a consumer_timeout on 3.10 or 4.0 is then not told apart: the worker finishes the task and loses its ack, as any lost channel |
| `async_side` | `connection._impl` | emit declares the queue on a blocking connection and publishes, with a window of confirms, on the asynchronous connection it wraps: one connection, not two | emit opens a second, asynchronous connection to publish on (as before this door) |

`check(connection)` looks at each when a connection opens (connect.Connection does it
once per connection; a pika connection made elsewhere, in a test say, is checked when it
is first used), and every feature is gated on a pika release in TESTED_PIKA, as the fast
paths are. A feature whose check fails steps aside to the fallback in the table and says
why in one debug log line. tests/test_rabbitmq_internals.py is the red light for a pika
upgrade: it checks each private on the installed pika, that each really behaves as we
rely on, and that a failed check (another version) takes the fallback with the tools
still working.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika

from utils.rabbitmq.errors import NoAnswer

log = logging.getLogger(__name__)

#: The pika releases whose privates were tested (the suite passed on each). Any other
#: version steps aside until it has been tested and added; pyproject.toml pins the range.
TESTED_PIKA = frozenset({"1.4.4"})

#: How long a broker operation may wait for its answer before we drop the connection.
#: pika's blocking calls have no time limit, and a RabbitMQ 4 node can leave one unanswered
#: for good: a queue.declare on a quorum queue whose leader was just killed, say.
ANSWER_WITHIN = 15.0

#: What answer_within calls on pika's asynchronous connection.
_TIMER_CALLS = ("_adapter_call_later", "_adapter_remove_timeout", "_terminate_stream")
#: What an asynchronous publisher calls on the I/O loop of the connection it goes on with
#: (pika's "extension" API, as BlockingConnection drives it).
_IOLOOP_CALLS = ("poll", "process_timeouts", "close", "add_callback_threadsafe")


@dataclass(frozen=True)
class Checked:
    """Why each private cannot be used on one connection ("" where it can)."""

    answer_within: str = ""
    server_properties: str = ""
    async_side: str = ""

    def stepped_aside(self) -> dict[str, str]:
        """{feature: why} for each feature that steps aside."""
        return {k: v for k, v in vars(self).items() if v}


def _untested(version: str) -> str:
    """Why this pika release may not be used ("" when it was tested)."""
    if version in TESTED_PIKA:
        return ""
    return f"pika {version} is not a version its internals were tested with ({', '.join(sorted(TESTED_PIKA))})"


def check(connection: Any, version: str = pika.__version__) -> Checked:
    """What of pika's privates this open blocking connection lets us use."""
    why = _untested(version)
    impl = getattr(connection, "_impl", None)
    if not why and not isinstance(impl, pika.SelectConnection):
        why = f"pika's BlockingConnection._impl is a {type(impl).__name__}, not a SelectConnection"
    if why:
        return Checked(why, why, why)
    timer = next(
        (f"pika's connection has no {n}()" for n in _TIMER_CALLS if not _calls(impl, n)), ""
    )
    props = getattr(impl, "server_properties", None)
    server = "" if isinstance(props, dict) else f"pika's server_properties is {props!r}"
    ioloop = getattr(impl, "ioloop", None)
    loop = next((f"pika's ioloop has no {n}()" for n in _IOLOOP_CALLS if not _calls(ioloop, n)), "")
    return Checked(timer, server, loop)


def _calls(obj: Any, name: str) -> bool:
    return callable(getattr(obj, name, None))


def checked(connection: Any) -> Checked:
    """The check of this connection: made when it opened (ours), else now."""
    found = getattr(connection, "checked", None)
    return found if isinstance(found, Checked) else check(connection)


def log_stepped_aside(found: Checked) -> None:
    """One debug line for each feature that steps aside, and why."""
    for feature, why in found.stepped_aside().items():
        log.debug("pika internals: %s steps aside to its fallback: %s", feature, why)


# -- answer_within ----------------------------------------------------------------------------
@contextlib.contextmanager
def answer_within(connection: Any, what: str, seconds: float | None = None) -> Iterator[None]:
    """Drop the connection if the operation inside does not end within `seconds`
    (ANSWER_WITHIN by default).

    The operation then raises NoAnswer (one of pika's connection errors, so it becomes
    ConnectionLost like any other lost connection, and callers reconnect or say so).
    Where the check failed, the operation waits as long as pika does.
    """
    if not connection.is_open or checked(connection).answer_within:
        yield
        return
    impl = connection._impl  # pika's connection, whose I/O loop the blocking call waits in
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


# -- server_properties ------------------------------------------------------------------------
def server_properties(connection: Any) -> dict[str, Any]:
    """The broker's Connection.Start properties (product, version...); {} where the check
    failed."""
    if checked(connection).server_properties:
        return {}
    return dict(connection._impl.server_properties)


# -- closing_reason ---------------------------------------------------------------------------
def closing_reason_reader(channel: Any, version: str = pika.__version__) -> Callable[[], object]:
    """For a blocking channel: a function that gives what pika kept of why it closed (the
    broker's Channel.Close, or None). Checked now; where the check fails, it gives None."""
    why = _untested(version)
    if not why and not hasattr(channel, "_closing_reason"):
        why = "pika's BlockingChannel has no _closing_reason"
    if why:
        log.debug("pika internals: closing_reason steps aside to its fallback: %s", why)
        return _unknown
    return lambda: channel._closing_reason


def _unknown() -> None:
    return None


# -- async_side -------------------------------------------------------------------------------
def async_side(connection: Any) -> Any | None:
    """The asynchronous connection (pika's SelectConnection) that an open blocking
    connection drives, to go on with through callbacks; None where the check failed."""
    if checked(connection).async_side:
        return None
    return connection._impl
