"""The worker's fast ack: the one place the worker reaches below pika's public API, and why.

Why: pika's BlockingChannel.basic_ack encodes the ack with its generic encoders, queues it,
turns on the socket's write watcher, and runs its I/O loop (an epoll wait, two epoll_ctl
calls, its timers) until the frame has gone. On the 2-core bench machine that was about 35
us of CPU per ack, against 1.5 us for the socket write itself; a worker at prefetch 1 acks
every task, so it paid that on every task (bench/NOTES.md). `FastAck.ack` writes the 21
bytes of the frame to the socket itself, when pika has nothing queued that must go first.
The bytes are pika's own (tests/test_work_fastack.py checks them), so the broker cannot
tell the two paths apart, and once ack() returns the frame is with the kernel, as it is
when basic_ack returns.

What it relies on: pika's private internals, named here and nowhere else in the worker:
- `connection._impl._transport`: the transport of a plain (not TLS) connection, with its
  socket `_sock` and `get_write_buffer_size()`, the bytes pika has queued for it;
- `connection._impl.bytes_sent` and `frames_sent`: the counters pika keeps of what it sends.
`self_check` looks for them, and for a pika version in `TESTED_PIKA`, when a consumer starts.
If anything differs it steps aside: `open_fast_ack` returns None, says why in a debug log
line, and every ack goes through `basic_ack`. Each ack steps aside too (returns False) when
pika has bytes queued (a heartbeat, say: they must go first), when the channel is not open
(pika's basic_ack then says why), when the broker has sent something not yet read (a close
that basic_ack would notice as it sends: one poll(2) of the socket finds out), or when the
socket takes nothing. `WORK_FAST_ACK=0` (read
by worker/cli.py) turns it off; the worker's ack tests run both ways.
"""

from __future__ import annotations

import logging
import select
import struct
from typing import Any

import pika

log = logging.getLogger(__name__)

#: The pika releases the fast ack was tested with: the worker tests passed on each, with it
#: on and off. Any other version steps aside until it has been tested and added.
TESTED_PIKA = frozenset({"1.4.4"})

#: basic.ack as a method frame: type 1, channel, payload size 13, class 60 (basic), method 80
#: (ack), the delivery tag, the `multiple` bit; then the frame end.
_ACK = struct.Struct(">BHIHHQB")
_FRAME_END = b"\xce"
_ACK_SIZE = _ACK.size + len(_FRAME_END)


def ack_frame(channel_number: int, tag: int, multiple: bool) -> bytes:
    """The bytes of a basic.ack frame, as pika marshals it."""
    return _ACK.pack(1, channel_number, 13, 60, 80, tag, multiple) + _FRAME_END


def self_check(connection: Any, version: str = pika.__version__) -> str | None:
    """Why the fast ack cannot run on this open blocking connection, or None when it can."""
    if version not in TESTED_PIKA:
        tested = ", ".join(sorted(TESTED_PIKA))
        return f"pika {version} is not a version the fast ack was tested with ({tested})"
    impl = getattr(connection, "_impl", None)
    transport = getattr(impl, "_transport", None)
    if type(transport).__name__ != "_AsyncPlaintextTransport":
        return f"the connection's transport is {type(transport).__name__}, not plain TCP"
    if not callable(getattr(transport, "get_write_buffer_size", None)):
        return "pika's transport has no get_write_buffer_size()"
    if not callable(getattr(getattr(transport, "_sock", None), "send", None)):
        return "pika's transport has no socket in _sock"
    for counter in ("bytes_sent", "frames_sent"):
        if not isinstance(getattr(impl, counter, None), int):
            return f"pika's connection.{counter} is not a counter"
    return None


def open_fast_ack(connection: Any, channel: Any) -> FastAck | None:
    """The fast ack for a consumer's channel, or None (logged) when it steps aside."""
    reason = self_check(connection)
    if reason is not None:
        log.debug("fast ack stepped aside, acking with basic_ack: %s", reason)
        return None
    return FastAck(connection, channel)


class FastAck:
    """Writes basic.ack frames straight to the connection's socket; see the module doc."""

    def __init__(self, connection: Any, channel: Any) -> None:
        self._connection = connection
        self._impl = connection._impl
        self._transport = self._impl._transport
        sock = self._transport._sock
        self._send = sock.send
        # Whether the broker has sent anything yet unread: a poll of the socket alone.
        self._unread = select.poll()
        self._unread.register(sock.fileno(), select.POLLIN)
        self._channel = channel
        self._number: int = channel.channel_number

    def ack(self, tag: int, multiple: bool = False) -> bool:
        """Send the ack now; False when it must go through basic_ack (nothing was sent)."""
        transport = self._transport
        if (
            self._impl._transport is not transport  # the connection closed meanwhile
            or transport.get_write_buffer_size()  # queued bytes go first, in order
            or not self._channel.is_open
            # Something from the broker waits (a channel or connection close, say):
            # basic_ack reads it as it sends, and a close then makes the ack fail, which
            # the worker logs as ack_lost and remembers. Let it.
            or self._unread.poll(0)
        ):
            return False
        data = _ACK.pack(1, self._number, 13, 60, 80, tag, multiple) + _FRAME_END
        try:
            sent = self._send(data)
        except OSError:  # would block, or the socket failed: pika's path says what happened
            return False
        # pika counts what it writes (public statistics; heartbeats go out on a timer).
        self._impl.bytes_sent += _ACK_SIZE
        self._impl.frames_sent += 1
        if sent < _ACK_SIZE:
            # A full socket buffer took part of it: pika sends the rest, before anything
            # else, and its I/O loop runs until it has (as basic_ack's would).
            transport.write(data[sent:])
            self._connection.process_data_events(0)
        return True
