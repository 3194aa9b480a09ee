"""Every event `emit` and `work` log, and the fields each carries: declared here, once.

The log line is the interface between the commands: emit and work write it (format.py),
tasks report and tasks dashboard read it back (fold.py), from log files or from the event
stream. So every event is declared below, with who writes it and its fields, and code
everywhere else names an event by its constant here, never by a string of its own.
tests/test_eventlog_schema.py holds both sides to this table: every event a writer logs
is declared, with declared fields and its required ones; the readers read declared fields
only. A renamed field then breaks a unit test, not a reader, silently.

A field's kind says what its value looks like in a line (every value is read back as a
string): "text"; "int" (digits, maybe a sign); "number" (seconds, three decimals); "bool"
(true or false). A kind ending in "?" marks a field an event may lack: format.py leaves a
field whose value is None out of the line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The writers: the two commands that log events.
EMIT = "emit"
WORK = "work"

#: What a value of each kind must look like, read back as a string.
KINDS = ("text", "int", "number", "bool")

#: Fields of every line: its time and its event (format.py writes them first).
LINE_FIELDS = ("ts", "event")
#: Fields any event may carry, though no writer sends them yet: `host`, the machine an
#: event came from, which the dashboard shows when there (docs/DASHBOARD.md).
ANY_EVENT_FIELDS = {"host": "text?"}


@dataclass(frozen=True)
class Event:
    """One event: its name, who writes it, what it says, and its fields with their kinds."""

    name: str
    writers: tuple[str, ...]
    doc: str
    #: field name -> kind ("text", "int", "number", "bool"), "?" at the end if optional.
    kinds: dict[str, str]

    @property
    def fields(self) -> frozenset[str]:
        """Every field it may carry (the line's own ts and event aside)."""
        return frozenset(self.kinds)

    @property
    def required(self) -> frozenset[str]:
        """The fields every line of it carries."""
        return frozenset(k for k, kind in self.kinds.items() if not kind.endswith("?"))


#: Every event, by name.
EVENTS: dict[str, Event] = {}


def _event(name: str, writers: str, doc: str, **kinds: str) -> str:
    """Declare an event; returns its name, the constant code names it by."""
    if name in EVENTS:
        raise ValueError(f"event {name} declared twice")
    for field, kind in kinds.items():
        if kind.rstrip("?") not in KINDS:
            raise ValueError(f"event {name}: field {field} has no kind {kind!r}")
    EVENTS[name] = Event(name, tuple(writers.split()), doc, {**kinds, **ANY_EVENT_FIELDS})
    return name


# -- the emitter's run ------------------------------------------------------------------------
EMIT_STARTED = _event(
    "emit_started",
    EMIT,
    "emit found the queue and is about to publish; total is unknown when reading stdin",
    run="text",
    source="text",
    queue="text",
    queue_type="text",
    url="text",
    order="text",
    total="int?",
    waiting="int?",
    consumers="int?",
)
QUEUE_FOUND = _event(
    "queue_found",
    EMIT,
    "emit uses an existing queue that differs from ours, and says how",
    queue="text",
    note="text",
)
RUN_MANIFEST = _event(
    "run_manifest",
    EMIT,
    "the rows a run holds (FIRST-LAST) and their task ids, once known",
    run="text",
    source="text",
    queue="text",
    total="int",
    rows="text",
    task_ids="text",
)
_EMIT_END = {
    "run": "text",
    "queue": "text",
    "rows": "text",
    "total": "int",
    "published": "int",
    "confirmed": "int",
    "republished": "int",
    "unroutable": "int",
    "nacked": "int",
    "blank": "int",
    "seconds": "number",
    "published_fast": "int",
    "first_unconfirmed_row": "int?",
    "reason": "text?",
    "resume": "text?",
}
EMIT_DONE = _event("emit_done", EMIT, "every row published and confirmed", **_EMIT_END)
EMIT_FAILED = _event(
    "emit_failed", EMIT, "emit stopped before every row was confirmed; resume says how", **_EMIT_END
)
BLOCKED = _event(
    "blocked",
    EMIT,
    "the broker blocks publishers (an alarm); emit waits up to wait_up_to",
    run="text",
    reason="text",
    wait_up_to="text",
)
UNBLOCKED = _event("unblocked", EMIT, "the broker accepts publishes again", run="text")

# -- a worker's life ----------------------------------------------------------------------------
WORKER_READY = _event(
    "worker_ready",
    WORK,
    "a worker consumes the queue (once a process, on its first connection)",
    worker="text",
    queue="text",
    queue_type="text",
    prefetch="int",
    node="text",
    note="text?",
)
QUEUE_WARNING = _event(
    "queue_warning",
    WORK,
    "what the queue lacks (a dead-letter target, a consumer timeout), and the fix",
    worker="text",
    queue="text",
    note="text",
)
SHUTDOWN_WARM = _event(
    "shutdown_warm",
    WORK,
    "the first stop signal: finish the task in hand, then exit",
    worker="text",
    task="text?",
    row="int?",
    run="text?",
    note="text",
)
SHUTDOWN_COLD = _event(
    "shutdown_cold",
    WORK,
    "the second stop signal: give the task in hand back, then exit",
    worker="text",
    task="text?",
    row="int?",
    run="text?",
    note="text",
)
WORKER_STOPPED = _event(
    "worker_stopped",
    WORK,
    "a worker's last line: what it did, and why it stopped",
    worker="text",
    done="int",
    failed="int",
    dead_lettered="int",
    redelivered="int",
    busy="number",
    stop="text",
)

# -- connections (emit's carry its run, a worker's its name and the task in hand) ----------------
CONNECTION_LOST = _event(
    "connection_lost",
    f"{EMIT} {WORK}",
    "the broker connection is gone; what happens next is in note (work) or unconfirmed (emit)",
    run="text?",
    worker="text?",
    task="text?",
    row="int?",
    reason="text",
    unconfirmed="int?",
    note="text?",
)
RECONNECT_FAILED = _event(
    "reconnect_failed",
    f"{EMIT} {WORK}",
    "a connection attempt failed; another follows",
    run="text?",
    worker="text?",
    attempt="int?",
    reason="text",
    retry_in="text?",
)
RECONNECTED = _event(
    "reconnected",
    f"{EMIT} {WORK}",
    "connected again; emit republishes what was unconfirmed, a worker consumes again",
    run="text?",
    worker="text?",
    node="text",
    republishing="int?",
    attempts="int?",
    note="text?",
)
DROPPED = _event(
    "dropped",
    WORK,
    "a delivery received but not started when the connection went",
    worker="text",
    task="text",
    row="int?",
    run="text?",
    reason="text",
    note="text",
)

# -- a task's attempts --------------------------------------------------------------------------
_TASK = {"worker": "text", "task": "text", "row": "int?", "run": "text?"}
#: An --exec attempt's record on its done or failed line (worker/results.py): the exit
#: code, or the signal that ended the command; its results folder (relative to the log
#: folder), each output's kept size and sha256, and which outputs --max-output cut.
JOB_FIELDS = {
    "exit_code": "int?",
    "signal": "int?",
    "results": "text?",
    "stdout_bytes": "int?",
    "stdout_sha256": "text?",
    "stderr_bytes": "int?",
    "stderr_sha256": "text?",
    "truncated": "text?",
}
STARTED = _event(
    "started",
    WORK,
    "a worker began an attempt at a task (dots: its work; redelivered: by the broker)",
    **_TASK,
    dots="int",
    attempt="int",
    redelivered="bool",
    body="text",
)
DONE = _event(
    "done",
    WORK,
    "an attempt succeeded (note: acked without running, its earlier ack lost)",
    **_TASK,
    dots="int?",
    seconds="number",
    attempt="int",
    output="text?",
    note="text?",
    **JOB_FIELDS,
)
FAILED = _event(
    "failed",
    WORK,
    "an attempt failed, or (reason poison message) the message could not be read",
    **_TASK,
    attempt="int?",
    of="int?",
    seconds="number?",
    reason="text",
    **JOB_FIELDS,
)
RETRY = _event(
    "retry",
    WORK,
    "a failed task goes back for attempt `attempt` of `of`",
    **_TASK,
    attempt="int",
    of="int",
    reason="text?",
)
REQUEUED = _event(
    "requeued",
    WORK,
    "a task given back unfinished (a cold stop, the broker's consumer_timeout)",
    **_TASK,
    reason="text",
    note="text",
)
DEAD_LETTERED = _event(
    "dead_lettered",
    WORK,
    "a task moved to the dead-letter queue `queue`, with the reason",
    **_TASK,
    queue="text",
    reason="text",
    note="text",
)
ACK_LOST = _event(
    "ack_lost",
    WORK,
    "a task's ack did not reach the broker, which will deliver it again",
    **_TASK,
    note="text",
)

# -- the event stream (stream.py), in the log of whichever command sent it ---------------------
EVENTS_OFF = _event(
    "events_off",
    f"{EMIT} {WORK}",
    "the stream refused our events (access, or not a stream): the log has them all",
    stream="text",
    reason="text",
    note="text",
)
EVENTS_UNSENT = _event(
    "events_unsent",
    f"{EMIT} {WORK}",
    "events not confirmed by the stream before exit",
    stream="text",
    lines="int",
    note="text",
)
EVENTS_DROPPED = _event(
    "events_dropped",
    f"{EMIT} {WORK}",
    "events that found the buffer full and went to the log only",
    stream="text",
    dropped="int",
    note="text",
)


def field_names() -> frozenset[str]:
    """Every field any event may carry, the line's ts and event included."""
    return frozenset(LINE_FIELDS).union(*(e.fields for e in EVENTS.values()))


def problems(fields: dict[str, str]) -> list[str]:
    """What is wrong with one parsed line against its declaration ([] when nothing is).

    For tests and tools: the readers themselves take what they can use and say why not.
    """
    name = fields.get("event", "")
    event = EVENTS.get(name)
    if event is None:
        return [f"event {name!r} is not declared"]
    out = [f"{name}: lacks {k}" for k in sorted(event.required - fields.keys())]
    for key, value in fields.items():
        kind = event.kinds.get(key)
        if key in LINE_FIELDS:
            continue
        if kind is None:
            out.append(f"{name}: {key} is not one of its fields")
        elif not _looks(kind.rstrip("?"), value):
            out.append(f"{name}: {key}={value!r} is not {kind.rstrip('?')}")
    return out


def _looks(kind: str, value: str) -> bool:
    if kind == "int":
        return value.lstrip("-").isdecimal()
    if kind == "bool":
        return value in ("true", "false")
    if kind == "number":
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return True
