"""How events look on a person's terminal; the log file keeps every field (utils/eventlog/format.py).

    17:01:40 worker_ready  worker w1
                           queue task_queue (quorum) at localhost:5672
                           log file logs/worker-w1.log
                           waiting for tasks; Ctrl+C to stop
    17:01:47 started       row 3     Task 3 ....
    17:01:47 done          row 3     0.31 s  Task 3 ....
    17:01:47 failed        row 2     attempt 1 of 3: command exited with code 1
    17:01:47 retry         row 2     runs again as attempt 2 of 3

The task id, `attempt=1` and `redelivered=false` stay in the log file; the terminal names an
attempt or a redelivery only when there is one. On a TTY every line fits the terminal's width
(80 columns when it does not say): a task's body is cut, a note wraps onto indented lines
(a path or URL longer than a line stays whole, so that it can be copied), and event names are coloured unless NO_COLOR is set (https://no-color.org). Through a pipe
each event is one plain line, with no escape codes.
"""

from __future__ import annotations

import os
import textwrap
import unicodedata
from pathlib import Path
from typing import Any, TextIO

from utils.eventlog import schema as ev
from utils.text import safe, terminal_width

#: The event name's column; longer names push the rest of their line right.
EVENT_WIDTH = 13
#: Text under the event's text: the time, a space, the event column and a space.
_INDENT = 9 + EVENT_WIDTH + 1
#: A wrapped note or reason takes at most this many lines; the log file has all of it.
MAX_LINES = 4
#: Bodies remembered from `started` for the `done` line (their ids are dropped oldest first).
_BODIES_MAX = 1000

#: SGR colour of each event's name on a colour terminal.
COLOURS = {
    ev.WORKER_READY: "1",  # bold
    ev.DONE: "32",  # green
    ev.RECONNECTED: "32",
    ev.FAILED: "31",  # red
    ev.DEAD_LETTERED: "1;31",
    ev.CONNECTION_LOST: "31",
    ev.RECONNECT_FAILED: "31",
    ev.ACK_LOST: "31",
    ev.RETRY: "33",  # yellow
    ev.REQUEUED: "33",
    ev.SHUTDOWN_WARM: "33",
    ev.SHUTDOWN_COLD: "33",
}
#: Fields the terminal never shows: who and which run is in the file name and the log.
#: The job record (exit status, host, results' sizes and sha256) stays in the log file and
#: the report (docs/WORKER.md): on the terminal the reason says how the command ended.
_HIDDEN = frozenset(("worker", "run", "task", "row", "dots", "note", "host", *ev.JOB_FIELDS))


def colour_wanted(environ: dict[str, str] | None = None) -> bool:
    """False when NO_COLOR holds any non-empty value, or TERM is dumb."""
    env = os.environ if environ is None else environ
    return not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def cells(text: str) -> int:
    """Columns the text takes on a terminal (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    return sum(_char_cells(c) for c in text)


def _char_cells(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def fit(text: str, width: int) -> str:
    """The text cut to `width` columns, with … at the cut."""
    if text.isascii():
        return text if len(text) <= width else text[: width - 1] + "…"
    if cells(text) <= width:
        return text
    used, out = 0, []
    for c in text:
        n = _char_cells(c)
        if used + n > width - 1:
            break
        out.append(c)
        used += n
    return "".join(out) + "…"


def printable(text: str) -> str:
    """The text with control characters, C1 and bidi overrides written as escapes
    (utils/text.py's safe()), so none reaches the terminal."""
    return safe(text)


def plain(value: Any) -> str:
    """A field's value in words: true/false, seconds to the millisecond, text made printable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}"
    return printable(str(value))


def _seconds(value: Any) -> str:
    try:
        s = float(value)
    except (TypeError, ValueError):
        return plain(value)
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


class Terminal:
    """Turns events into the lines a person reads: fitted to a TTY's width, coloured there."""

    def __init__(
        self,
        width: int | None = None,
        colour: bool = False,
        log_path: Path | None = None,
        stream: TextIO | None = None,
    ) -> None:
        #: Columns to fit each line in; None (not a TTY): one line per event, uncut.
        self.width = width
        self.colour = colour
        #: Named when the worker says it is ready.
        self.log_path = log_path
        self._stream = stream  # a TTY, to read its width again after a resize
        self._resized = False
        self._interrupted = False
        self._bodies: dict[str, str] = {}
        self._names = {
            e: f"\x1b[{c}m{e}\x1b[0m" + " " * (EVENT_WIDTH - len(e)) for e, c in COLOURS.items()
        }

    @classmethod
    def for_stream(cls, stream: TextIO, log_path: Path | None = None) -> Terminal:
        """Width and colour if the stream is a TTY; plain, uncut lines if it is not."""
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if not tty:
            return cls(log_path=log_path)
        return cls(terminal_width(stream), colour_wanted(), log_path, stream)

    @property
    def is_tty(self) -> bool:
        return self._stream is not None

    def resized(self) -> None:
        """The terminal changed size (SIGWINCH): read its width before the next line."""
        self._resized = True

    def interrupted(self) -> None:
        """Ctrl+C was pressed: the terminal echoed ^C, so the next text starts a new line.

        Safe in a signal handler: it only sets a flag.
        """
        if self._stream is not None:
            self._interrupted = True

    def _prefix(self) -> str:
        if self._resized and self._stream is not None:
            self._resized = False
            self.width = terminal_width(self._stream)
        if self._interrupted:
            self._interrupted = False
            return "\n"
        return ""

    def text(self, text: str) -> str:
        """A line of our own (the worker's summary, say), wrapped to the width on a TTY."""
        text = printable(text)
        if self.width is None:
            return self._prefix() + text
        prefix = self._prefix()  # reads a new width first
        lines = textwrap.wrap(text, self.width - 1, subsequent_indent="  ") or [""]
        return prefix + "\n".join(fit(line, self.width - 1) for line in lines)

    def line(self, ts: str, event: str, fields: dict[str, Any]) -> str:
        """The terminal text of one event: "" for none, several lines when a note wraps."""
        if event == ev.WORKER_STOPPED:
            return ""  # the summary line that follows says the same, in words
        if event == ev.STARTED or (event == ev.DONE and not fields.get("note")):
            pieces = [self._task_text(event, fields)]
            cut = True
        else:
            pieces = self._pieces(event, fields)
            cut = False
        who = _who(fields)
        head = f"{ts[11:19]} "  # the log file's time (UTC), so that the two are easy to match
        name = f"{event:<{EVENT_WIDTH}} "
        shown = self._names[event] + " " if self.colour and event in self._names else name
        prefix = self._prefix()
        width = self.width
        if width is None:
            return prefix + head + shown + who + "; ".join(p for p in pieces if p)
        room = width - 1 - len(head) - len(name)
        if cut:
            return prefix + head + shown + who + fit(pieces[0], max(room - len(who), 10))
        return prefix + head + shown + self._wrapped(who, pieces, max(room, 20))

    def _task_text(self, event: str, f: dict[str, Any]) -> str:
        """What a started or done line says after the row: the seconds, any retry, the body."""
        bodies = self._bodies
        task = f.get("task")
        extra = []
        attempt = f.get("attempt")
        if isinstance(attempt, int) and attempt > 1:
            extra.append(f"attempt {attempt}")
        if event == ev.STARTED:
            if f.get("redelivered"):
                extra.append("redelivered")
            body = printable(str(f.get("body", "")))
            if task is not None:
                bodies[task] = body
                if len(bodies) > _BODIES_MAX:
                    del bodies[next(iter(bodies))]
            return f"({', '.join(extra)}) {body}" if extra else body
        body = bodies.pop(task, "") if task is not None else ""
        text = _seconds(f.get("seconds"))
        if extra:
            text += f" ({', '.join(extra)})"
        output = f.get("output")
        if output:
            said = f"output: {printable(str(output))}"
            body = f"{body}  {said}" if body else said
        return f"{text}  {body}" if body else text

    def _pieces(self, event: str, f: dict[str, Any]) -> list[str]:
        """What any other event says, as phrases; each wraps onto lines of its own on a TTY."""
        used: set[str] = set()

        def get(key: str) -> Any:
            used.add(key)
            return f.get(key)

        note = get("note")
        pieces: list[str] = []
        if event == ev.WORKER_READY:
            pieces.append(f"worker {get('worker')}")
            where = f"queue {get('queue')} ({get('queue_type')}) at {get('node')}"
            prefetch = get("prefetch")
            if prefetch not in (None, 1):
                where += f", prefetch {prefetch}"
            pieces.append(where)
            if self.log_path is not None:
                pieces.append(f"log file {self.log_path}")
            if note:
                pieces.append(str(note))
            note = "waiting for tasks; Ctrl+C to stop"
        elif event == ev.FAILED:
            attempt, of, reason = get("attempt"), get("of"), get("reason")
            get("seconds")
            tried = f"attempt {attempt} of {of}: " if attempt is not None and of else ""
            pieces.append(f"{tried}{reason}")
        elif event == ev.DONE:  # with a note: it says why the task did not run again
            attempt = get("attempt")
            again = f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else ""
            pieces.append(_seconds(get("seconds")) + again)
            self._bodies.pop(str(f.get("task")), None)
        elif event == ev.REQUEUED and note:
            pieces.append(f"{get('reason')}: {note}")
            note = None
        elif event == ev.RETRY:
            pieces.append(f"runs again as attempt {get('attempt')} of {get('of')}")
            self._bodies.pop(str(f.get("task")), None)
        elif event == ev.RECONNECT_FAILED:
            pieces.append(f"attempt {get('attempt')}: {get('reason')}")
            pieces.append(f"trying again in {get('retry_in')}")
        elif event == ev.RECONNECTED:
            get("attempts")
            pieces.append(f"to {get('node')}")
        elif event in (ev.CONNECTION_LOST, ev.DEAD_LETTERED):
            get("queue")
            reason = get("reason")
            if reason is not None:
                pieces.append(str(reason))
        if event in (ev.DEAD_LETTERED, ev.REQUEUED, ev.ACK_LOST):
            self._bodies.pop(str(f.get("task")), None)
        if note:
            pieces.append(str(note))
        rest = " ".join(
            f"{k}={plain(v)}"
            for k, v in f.items()
            if v is not None and k not in used and k not in _HIDDEN
        )
        if rest:
            pieces.append(rest)
        return [printable(p) for p in pieces]

    def _wrapped(self, who: str, pieces: list[str], room: int) -> str:
        """Each piece on lines of its own under the text column, at most MAX_LINES in all."""
        lines: list[str] = []
        for n, piece in enumerate(pieces):
            first = who if n == 0 else ""
            # A word longer than the line (a path, a URL) stays whole, so that it can be
            # copied; the terminal wraps it.
            wrapped = textwrap.wrap(
                first + piece,
                room,
                break_long_words=False,
                break_on_hyphens=False,
                max_lines=MAX_LINES,
                placeholder=" …",
            )
            lines.extend(wrapped or [first.rstrip()])
        return ("\n" + " " * _INDENT).join(lines)


def _who(f: dict[str, Any]) -> str:
    """The row column: `row 3`, or the message id for a message that has no row."""
    row = f.get("row")
    if row is not None:
        return f"row {row:<5} "
    task = f.get("task")
    return f"{printable(str(task))} " if task is not None else ""
