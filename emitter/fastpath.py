"""emit's fast path: the one module that reaches below pika's public API, and why.

Why: pika publishes a message as three frames (method, header, body) built by generic,
per-field encoders, and hands each frame to the socket with its own send(). In a profile of
emit those two were most of the client's time. This module builds a task's frames in one go
(`PublishEncoder`) and joins a batch's frames into one socket write; emit needs about half
the CPU for it (docs/EMIT.md). The frames are byte for byte pika's own
(tests/test_emit_fastpath.py checks it), so the broker cannot tell the two paths apart.

What it relies on: pika's private internals, named here and nowhere else in emit:
- `connection._adapter_emit_data(bytes)`: pika's own write path for marshaled frames;
- `connection._body_max_length`: the most body bytes that one frame carries;
- `connection._transport._tx_buffers`: the deque of bytes waiting for the socket.
`self_check` looks for them, and for a pika version in `TESTED_PIKA`, each time a channel
opens. If anything differs it steps aside: `open_fast_path` returns None, says why in a
debug log line, and emit publishes every task with `channel.basic_publish`. `EMIT_FAST_PATH=0`
(read by emitter/cli.py) turns it off; the emit tests run both ways.

The encoder lives here, not in a module of its own, because its bytes are only of use on
pika's private write path: the plain path needs no encoder at all. Deleting this file and
its call sites in emitter/publisher.py leaves a correct, slower emit.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from typing import Any

import pika
from pika import frame, spec

from utils.task import H_FILE, H_ROW, H_RUN, Task

log = logging.getLogger(__name__)

#: The pika releases the fast path was tested with: the emit tests passed on each, with the
#: fast path on and off. Any other version steps aside until it has been tested and added.
TESTED_PIKA = frozenset({"1.4.4"})

#: Property flags of Task.properties(): content type and encoding, headers, delivery mode,
#: message id, timestamp (AMQP 0-9-1 basic class, highest bit first).
_FLAGS = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0080 | 0x0040
_FRAME_END = b"\xce"
_INT32 = range(-(2**31), 2**31)
#: Frames in one publish the encoder builds: method, header, one body frame.
_FRAMES_PER_PUBLISH = 3


def self_check(connection: Any, version: str = pika.__version__) -> str | None:
    """Why the fast path cannot run on this open connection, or None when it can."""
    if version not in TESTED_PIKA:
        tested = ", ".join(sorted(TESTED_PIKA))
        return f"pika {version} is not a version the fast path was tested with ({tested})"
    if not callable(getattr(connection, "_adapter_emit_data", None)):
        return "pika's connection has no _adapter_emit_data(data)"
    body_max = getattr(connection, "_body_max_length", None)
    if not isinstance(body_max, int) or body_max <= 0:
        return f"pika's connection._body_max_length is {body_max!r}, not a frame size"
    buffers = getattr(getattr(connection, "_transport", None), "_tx_buffers", None)
    if not isinstance(buffers, deque):
        return "pika's connection._transport._tx_buffers is not a deque"
    for counter in ("bytes_sent", "frames_sent"):
        if not isinstance(getattr(connection, counter, None), int):
            return f"pika's connection.{counter} is not a counter"
    return None


def open_fast_path(connection: Any, channel_number: int, queue: str) -> FastPath | None:
    """The fast path for a channel that just opened, or None (logged) when it steps aside."""
    reason = self_check(connection)
    if reason is not None:
        log.debug("emit fast path stepped aside, publishing with basic_publish: %s", reason)
        return None
    return FastPath(connection, channel_number, queue)


class FastPath:
    """Publishes tasks as pre-built frames on pika's own write path; see the module doc."""

    def __init__(self, connection: Any, channel_number: int, queue: str) -> None:
        self._conn = connection
        self._write = connection._adapter_emit_data
        self._buffers: deque[bytes] = connection._transport._tx_buffers
        self._encoder = PublishEncoder(
            channel_number, queue, connection._body_max_length, int(time.time())
        )

    def set_time(self, timestamp: int) -> None:
        """The timestamp (seconds) that the next messages carry."""
        self._encoder.set_time(timestamp)

    def publish(self, task: Task) -> bool:
        """Write the task's publish; False for a task the caller must give to basic_publish."""
        data = self._encoder.encode(task)
        if data is None:
            return False
        self._write(data)
        # pika's _output_marshaled_frames counts what it writes; this write bypasses it. In
        # pika 1.4.4 nothing decides on these counters (heartbeats go out on a timer), but
        # they are public statistics, so they stay true.
        self._conn.bytes_sent += len(data)
        self._conn.frames_sent += _FRAMES_PER_PUBLISH
        return True

    def flush(self) -> None:
        """Join the frames buffered for the socket into one write.

        pika buffers each frame separately and sends each with its own socket.send(); in a
        profile that was the largest cost of a run. The I/O loop then sends the same bytes
        in one call. Frames basic_publish buffered are joined too, in their order.
        """
        buffers = self._buffers
        if len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)


def _shortstr(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"a short string is at most 255 bytes: {text[:40]}...")
    return struct.pack("B", len(raw)) + raw


def _longstr_value(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"S" + struct.pack(">I", len(raw)) + raw


class PublishEncoder:
    """The bytes of a task's basic.publish, built in one go: the frames pika would send.

    A task's properties always have the same shape (utils.task.Task.properties), so the
    parts that do not change within a run are encoded once, and each message only adds its
    own id, row, size and body. encode() returns None for a task of another shape.
    """

    def __init__(self, channel_number: int, queue: str, body_max: int, timestamp: int) -> None:
        self.channel_number = channel_number
        self.body_max = body_max  # the most body bytes one frame carries (frame_max - 8)
        self._method = frame.Method(
            channel_number, spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True)
        ).marshal()
        self._frame_head = struct.Struct(">BHI")
        self._class_head = struct.Struct(">HHQH")
        self._props_start = _shortstr("text/plain") + _shortstr("utf-8")
        self._stamp = struct.pack(">Q", timestamp)
        self.timestamp = timestamp
        self._run: str | None = None
        self._source: str | None = None
        self._run_part = b""
        self._source_part = b""

    def set_time(self, timestamp: int) -> None:
        """The timestamp (seconds) that the next messages carry."""
        if timestamp != self.timestamp:
            self.timestamp = timestamp
            self._stamp = struct.pack(">Q", timestamp)

    def encode(self, task: Task) -> bytes | None:
        """The frames of one publish, or None for a task outside the fast path."""
        if task.attempt != 1 or task.row not in _INT32 or task.source is None:
            return None
        body = task.body.encode("utf-8")
        if len(body) > self.body_max or not body:
            return None
        if task.run_id != self._run or task.source != self._source:
            if task.run_id is None:
                return None
            self._run, self._source = task.run_id, task.source
            self._run_part = _shortstr(H_RUN) + _longstr_value(task.run_id)
            self._source_part = _shortstr(H_FILE) + _longstr_value(task.source)
        row = _shortstr(H_ROW) + b"I" + struct.pack(">i", task.row)
        table = self._run_part + row + self._source_part
        payload = b"".join(
            (
                self._class_head.pack(60, 0, len(body), _FLAGS),
                self._props_start,
                struct.pack(">I", len(table)),
                table,
                b"\x02",
                _shortstr(task.task_id),
                self._stamp,
            )
        )
        ch = self.channel_number
        return b"".join(
            (
                self._method,
                self._frame_head.pack(spec.FRAME_HEADER, ch, len(payload)),
                payload,
                _FRAME_END,
                self._frame_head.pack(spec.FRAME_BODY, ch, len(body)),
                body,
                _FRAME_END,
            )
        )
