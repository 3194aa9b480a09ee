"""EventLog: the event lines of one command, to its rotating log file and its terminal.

emit and work each write one (logs/emitter.log, logs/worker-NAME.log); the event stream
(stream.py) takes the same lines as its sink. The lines are format.py's, and a worker's
per-task path runs through here: the write goes straight to the file, and a task that takes
no time has its lines deferred until its ack is on the wire (defer()).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from utils.eventlog.format import Terminal, _file_and_terminal_lines, _file_line, now_iso

#: A worker's log file rotates at this size, keeping BACKUPS old files.
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


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
        #: the event stream (stream.py) sends the same lines to the broker.
        self.sink: Callable[[str, bool], None] | None = None

    def defer(self, event: str, fields: dict[str, Any]) -> None:
        """Stamp an event now but write it at the next flush() or event(), in order.

        A worker defers the lines of a task that takes no time until its ack is on the
        wire, so the write overlaps the broker's round trip instead of adding to it: the
        rule "deferred lines after the ack" (worker/settle.py, deferred_after_ack), kept by
        "acks before lines" (acks_before_lines) since event() writes these first.
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
