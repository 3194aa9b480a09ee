"""The log line format: one event per line, `key=value` pairs, read back by `tasks report`.

    ts=2026-11-26T23:59:01.123Z event=started worker=host-42 task=20261126T235900-ab12-3 row=3 ...

A value with a space, a quote, an equals sign or nothing in it is written as a JSON string.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Protocol

_BARE = re.compile(r'^[^\s"=]+\Z')  # \Z: $ would let a trailing newline through
#: key=value (a JSON string, or bare up to the next space) and the spaces after it; else
#: any one character (group 3), which means the line is not in our format.
_PAIRS = re.compile(r'(\w+)=("[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)(?:\s+|\Z)|(.)', re.S)

#: Bodies are shortened to this many characters in log lines.
BODY_CHARS = 60
#: A worker's log file rotates at this size, keeping BACKUPS old files.
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


#: (second, "YYYY-MM-DDTHH:MM:SS.") of the last time stamp: most lines share their second
#: with the one before, and formatting a datetime cost more than the rest of the stamp.
_second: tuple[int, str] = (-1, "")
#: "000Z" to "999Z": the end of a stamp, looked up rather than formatted.
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def now_iso() -> str:
    """The current UTC time, to the millisecond, as the logs write it."""
    global _second
    sec, ms = divmod(time.time_ns() // 1_000_000, 1000)
    second = _second  # one read: another thread may replace it meanwhile
    if second[0] != sec:
        second = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    return second[1] + _MILLIS[ms]


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _value(v: Any) -> str:
    # Exact types first: a worker formats about 15 values a task, most of them str or int.
    t = type(v)
    if t is str:
        s = v
    elif t is int:
        return str(v)  # digits and a sign: never quoted
    elif isinstance(v, bool):
        return "true" if v else "false"
    elif isinstance(v, float):
        return f"{v:.3f}"
    else:
        s = str(v)
    # encode_basestring is what json.dumps(s, ensure_ascii=False) calls, without the
    # encoder object that json.dumps builds for every call.
    return s if _is_bare(s) else encode_basestring(s)


def _is_bare(s: str) -> bool:
    """_BARE.match(s), in about half the instructions for the usual printable text.

    A printable str holds no whitespace but the ASCII space, so three `in` tests settle it;
    the regex (whose set-up alone is most of its cost) only sees the rest.
    """
    return (
        bool(s)
        and " " not in s
        and '"' not in s
        and "=" not in s
        and (s.isprintable() or _BARE.match(s) is not None)
    )


def format_event(event: str, **fields: Any) -> str:
    """One log line for an event; fields whose value is None are left out."""
    return _file_and_terminal_lines(now_iso(), event, fields)[0]


def parse_line(line: str) -> dict[str, str] | None:
    """The fields of one log line, or None when the line is not in our format."""
    line = line.strip()
    if not line.startswith("ts="):
        return None
    out: dict[str, str] = {}
    # One pass in C over the whole line: a pair, or (group 3) a character that cannot
    # start one, which makes the line not ours. A report reads every line there is.
    for key, raw, stray in _PAIRS.findall(line):
        if stray:
            return None
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                return None
        out[key] = raw
    if "event" not in out:
        return None
    try:
        parse_ts(out["ts"])
    except ValueError:
        return None
    return out


def shorten(text: str, limit: int = BODY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _file_line(ts: str, event: str, fields: dict[str, Any]) -> str:
    """The log-file line of one event (no terminal line: the busy worker's path).

    _value inlined for str and int, most of a task's values: a call per value cost a
    tenth of the line.
    """
    parts = [f"ts={ts} event={event}"]
    append = parts.append
    for k, v in fields.items():
        t = type(v)
        if t is str:
            # _is_bare(v), inlined
            bare = v and " " not in v and '"' not in v and "=" not in v
            if bare and (v.isprintable() or _BARE.match(v)):
                append(f"{k}={v}")
            else:
                append(f"{k}={encode_basestring(v)}")
        elif t is int:
            append(f"{k}={v}")
        elif v is not None:
            append(f"{k}={_value(v)}")
    return " ".join(parts)


def _file_and_terminal_lines(
    ts: str, event: str, fields: dict[str, Any], terminal: Terminal | None = None
) -> tuple[str, str]:
    """The log-file line and (if `terminal`) the terminal line of one event.

    Each value is formatted once for both.
    """
    if not terminal:
        return _file_line(ts, event, fields), ""
    return _file_line(ts, event, fields), terminal.line(ts, event, fields)


class Terminal(Protocol):
    """Where a person reads events: the worker's layout (worker/terminal.py) is one."""

    def line(self, ts: str, event: str, fields: dict[str, Any]) -> str:
        """The person's form of one event ("" to show nothing for it)."""
        ...


class EventLog:
    """Writes event lines to a rotating file and, optionally, to the terminal."""

    def __init__(self, path: Path, *, echo: bool = True, terminal: Terminal | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One logger per file; handlers are added once, however often this is built.
        self._logger = logging.getLogger(f"tasks.events.{path.resolve()}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if not self._logger.handlers:
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)
        self.echo = echo
        self._size = path.stat().st_size if path.exists() else 0
        self._pending: list[tuple[str, dict[str, Any], str]] = []
        #: Echo a person's form of each event (worker/terminal.py) instead of the file's line.
        self.terminal = terminal
        #: Called with the text of each write to the file (one or more lines, no final
        #: newline), and True when it was an event written at once rather than deferred:
        #: the event stream (utils/events.py) sends the same lines to the broker.
        self.sink: Callable[[str, bool], None] | None = None

    def defer(self, event: str, fields: dict[str, Any]) -> None:
        """Stamp an event now but write it at the next flush() or event(), in order.

        A worker defers the lines of a task that takes no time until its ack is on the
        wire, so the write overlaps the broker's round trip instead of adding to it.
        The fields come as a dict (kept, not copied): the worker builds one per line.
        """
        self._pending.append((event, fields, now_iso()))

    def flush(self) -> None:
        """Write the deferred events, in one write."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        terminal = self.terminal if self.echo else None
        if terminal is None:  # no person's form: the file's lines, formatted once
            text = "\n".join([_file_line(ts, event, fields) for event, fields, ts in pending])
            self._write(text)
            if self.sink is not None:
                self.sink(text, False)
            if self.echo:
                print(text, file=sys.stderr, flush=True)
            return
        lines = [
            _file_and_terminal_lines(ts, event, fields, terminal) for event, fields, ts in pending
        ]
        text = "\n".join(line for line, _human in lines)
        self._write(text)
        if self.sink is not None:
            self.sink(text, False)
        if self.echo:
            texts = [human if terminal is not None else line for line, human in lines]
            texts = [t for t in texts if t]  # a terminal may show nothing for an event
            if texts:
                print("\n".join(texts), file=sys.stderr, flush=True)

    def event(self, event: str, **fields: Any) -> str:
        """Write one event now, after any deferred ones; returns its log-file line."""
        self.flush()
        terminal = self.terminal if self.echo else None
        line, human = _file_and_terminal_lines(now_iso(), event, fields, terminal)
        self._write(line)
        if self.sink is not None:
            self.sink(line, True)
        if self.echo and (human or terminal is None):
            print(human if terminal is not None else line, file=sys.stderr, flush=True)
        return line

    def _write(self, line: str) -> None:
        """Append one line and flush it, rotating by size as the handler would.

        Straight to the handler's stream: the logging machinery (a record, the caller's
        frame, two stat calls per line) cost a busy worker several times more than the
        write itself.
        """
        handler = self._logger.handlers[0]
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        handler.acquire()
        try:
            if handler.stream is None:  # closed after a rollover elsewhere
                handler.stream = handler._open()
            handler.stream.write(line + "\n")
            handler.stream.flush()
            self._size += len(line) + 1  # characters; near enough to bytes for rotation
            if self._size >= MAX_BYTES:
                handler.doRollover()
                self._size = 0
        finally:
            handler.release()

    def close(self) -> None:
        """Write what is deferred, then close the file."""
        self.flush()
        for h in list(self._logger.handlers):
            h.close()
            self._logger.removeHandler(h)
