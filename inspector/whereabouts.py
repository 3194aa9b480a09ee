"""Where the tasks of a run that are not done are now: waiting, in progress, or gone.

The logs say what was done. For the rest, the report asks the broker about the run's queue
(`look`) and sets its counts against the logs of every run that used that queue
(`locate`, a pure function). The rules are written down in docs/REPORT.md, "Where the
tasks not done are"; in short:

- the queue's messages are given to the runs newest first: a queue is first in, first
  out, so what is still in it is the newest work;
- a task that left the queue with no done event in these logs was taken by another
  consumer when the broker shows one (attached now, or deliveries our logs do not have);
  otherwise it is missing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit

from inspector.analysis import RunSummary
from inspector.runs import run_order
from inspector.status import ManagementUnavailable, default_management_url, fetch_json
from utils import rabbitmq
from utils.errors import TaskToolError
from utils.eventlog.records import UNFINISHED, LogSet, Run, TaskRecord
from utils.rowset import RowSet
from utils.settings import Settings, url_host, url_vhost
from utils.text import plural, safe

#: The name our workers give their connections: "work NAME" (worker/loop.py).
WORKER_CONNECTION = "work "


@dataclass
class QueueView:
    """One queue as the broker shows it now: counts over AMQP, the rest from the API."""

    name: str
    exists: bool
    ready: int = 0
    consumers: int = 0
    dead: int | None = None  # None: there is no dead-letter queue
    unacked: int | None = None  # None: the management API did not answer
    #: Consumers whose connection is not one of these logs' workers (management API).
    foreign_consumers: int | None = None
    #: The broker's counts of deliveries from the queue since it was created
    #: (management API): to consumers that ack, basic.get, and with automatic ack.
    delivered: int | None = None
    got: int | None = None
    auto_acked: int | None = None


@dataclass
class BrokerView:
    """What the broker said about the queues, or why it said nothing."""

    reachable: bool
    where: str
    note: str = ""  # why it was not reachable, or what the management API did not say
    queues: dict[str, QueueView] = field(default_factory=dict)
    management: bool = False  # the management API answered about every queue that exists
    #: The broker asked, as amqp://host:port/vhost (no credentials), and every URL asked.
    url: str = ""
    asked: tuple[str, ...] = ()


def look(settings: Settings, queues: list[str], ours: set[str]) -> BrokerView:
    """Ask the broker about each queue; never raises for a broker that is not there.

    ours: the worker names in the logs, to tell their consumers from other consumers.
    """
    where = ", ".join(url_host(u) for u in settings.urls)
    asked = tuple(settings.urls)
    try:
        conn, url = rabbitmq.connect(settings, client_name="tasks report")
    except TaskToolError as exc:
        return BrokerView(False, where, exc.message, asked=asked)
    views: dict[str, QueueView] = {}
    try:
        for name in queues:
            counts = rabbitmq.queue_counts(conn, name)
            dead = rabbitmq.queue_counts(conn, rabbitmq.dead_letter_name(name))
            view = QueueView(name, counts is not None, dead=dead[0] if dead else None)
            if counts is not None:
                view.ready, view.consumers = counts
            views[name] = view
    except TaskToolError as exc:  # what asking may raise; none of it stops the report
        return BrokerView(False, url_host(url), exc.message, asked=asked)
    finally:
        if conn.is_open:
            conn.close()
    out = BrokerView(
        True, url_host(url), queues=views, management=True, url=broker_name(url), asked=asked
    )
    api = settings.management_url or default_management_url(url)
    for view in views.values():
        if not view.exists:
            continue
        try:
            _from_management(view, api, url_vhost(url), url, ours)
        except ManagementUnavailable as exc:
            out.note = (
                f"the management API did not answer ({exc}): unacked messages and other "
                "consumers' deliveries are unknown; tasks in progress are taken from the logs"
            )
            out.management = False
            break
    return out


def _from_management(view: QueueView, api: str, vhost: str, url: str, ours: set[str]) -> None:
    data = fetch_json(api, f"api/queues/{quote(vhost, safe='')}/{quote(view.name, safe='')}", url)
    view.unacked = _int(data.get("messages_unacknowledged"))
    stats = data.get("message_stats") or {}
    view.delivered = _int(stats.get("deliver")) or 0
    view.got = (_int(stats.get("get")) or 0) + (_int(stats.get("get_no_ack")) or 0)
    view.auto_acked = _int(stats.get("deliver_no_ack")) or 0
    foreign = 0
    for consumer in data.get("consumer_details") or []:
        conn_name = (consumer.get("channel_details") or {}).get("connection_name")
        if not conn_name:
            continue
        try:
            conn = fetch_json(api, f"api/connections/{quote(str(conn_name), safe='')}", url)
        except ManagementUnavailable:
            continue  # the connection closed since: it consumes no more
        given = str(conn.get("user_provided_name") or "")
        if not (given.startswith(WORKER_CONNECTION) and given[len(WORKER_CONNECTION) :] in ours):
            foreign += 1
    view.foreign_consumers = foreign


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) else None


@dataclass
class Whereabouts:
    """Where one run's tasks that are not done are, as far as the broker and logs tell."""

    judged_from: str  # "broker", or "logs" when the broker was not asked or not reachable
    note: str
    done: int
    dead: int
    waiting: int = 0  # in the queue, ready
    in_progress: int = 0  # held unacked by a worker of these logs
    in_progress_elsewhere: int = 0  # held unacked by a consumer that writes no log here
    dead_unlogged: int = 0  # in the dead-letter queue, with no dead_lettered line here
    #: Not seen anywhere while emit has not logged its end: perhaps not published yet.
    unpublished: int = 0
    left: RowSet = field(default_factory=RowSet)  # rows that left the queue, not done here
    #: Rows not done that the broker asked cannot tell about (no such queue there, or the
    #: run was emitted to another broker or vhost), and why: never called missing.
    unjudged: RowSet = field(default_factory=RowSet)
    unjudged_why: str = ""
    taken_elsewhere: bool = False  # ... and the broker shows another consumer took them
    evidence: str = ""
    missing: RowSet = field(default_factory=RowSet)
    #: Rows in progress on a worker of these logs (their latest delivery has no end yet).
    active: list[int] = field(default_factory=list)
    queue: QueueView | None = None
    foreign_consumers: int = 0

    @property
    def running(self) -> bool:
        """Some of the run's tasks are still waiting in the queue or being worked on."""
        return bool(
            self.waiting or self.in_progress or self.in_progress_elsewhere or self.unpublished
        )


def locate(
    shown: list[tuple[Run, RunSummary]],
    every: list[tuple[Run, RunSummary]],
    logs: LogSet,
    view: BrokerView | None,
    default_queue: str,
) -> list[Whereabouts]:
    """The whereabouts of each shown run's tasks (every: all runs in the logs, for sharing
    out the counts of a queue that several runs used)."""
    out = []
    for run, s in shown:
        queue = queue_of(run, default_queue)
        other = emitted_elsewhere(run, view.asked) if view is not None else None
        if view is None or not view.reachable or queue not in view.queues:
            w = _from_logs(s, logs, view)
            if other is not None:
                w.note += f" (this run was emitted to {other})"
            out.append(w)
            continue
        if other is not None:
            out.append(_unjudged(s, f"this run was emitted to {other}, not to {view.url}"))
            continue
        if not view.queues[queue].exists:
            out.append(_unjudged(s, f"the queue {safe(queue, 200)} does not exist on {view.url}"))
            continue
        peers = [
            (r, x)
            for r, x in every
            if queue_of(r, default_queue) == queue and emitted_elsewhere(r, view.asked) is None
        ]
        shares = _share(peers, logs, view.queues[queue], view.note)
        out.append(shares[run.run_id])
    return out


def _unjudged(s: RunSummary, why: str) -> Whereabouts:
    """A run whose tasks not done the broker asked cannot tell about: named, not missing."""
    w = Whereabouts("broker", why, _done_count(s), len(s.audit.dead), unjudged=s.audit.missing)
    w.unjudged_why = why
    return w


def broker_name(url: str) -> str:
    """amqp://host:port/vhost: which broker and vhost a URL names, with no credentials."""
    parts = urlsplit(url)
    vhost = url_vhost(url)
    return f"{parts.scheme}://{url_host(url)}/{'' if vhost == '/' else quote(vhost, safe='')}"


def _broker_key(url: str) -> tuple[frozenset[str], int, str] | None:
    """What tells two brokers apart: the host's addresses, the port and the vhost (None
    for a URL that does not parse, such as a hostile log line's)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("amqp", "amqps") or not host:
        return None
    return _addresses(host), port, url_vhost(url)


@cache
def _addresses(host: str) -> frozenset[str]:
    """The host's addresses (localhost is 127.0.0.1 and ::1), or its name when it does not
    resolve."""
    try:
        return frozenset(str(a[4][0]) for a in socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return frozenset([host.lower()])


def emitted_elsewhere(run: Run, asked: tuple[str, ...]) -> str | None:
    """The broker (amqp://host:port/vhost) the run's emit line says it was emitted to, when
    that is none of the brokers asked; None when it is one of them, or is not known."""
    theirs = _broker_key(run.emitted.get("url", ""))
    if theirs is None or not asked:
        return None
    for url in asked:
        ours = _broker_key(url)
        if ours is None or (ours[1:] == theirs[1:] and ours[0] & theirs[0]):
            return None
    return safe(broker_name(run.emitted["url"]), 200)


def queue_of(run: Run, default_queue: str) -> str:
    """The queue a run was emitted to (the default when the emitter's lines are gone)."""
    return run.emitted.get("queue") or default_queue


def _done_count(s: RunSummary) -> int:
    return len({t.row for t in s.tasks if t.done and t.row is not None})


def _active(s: RunSummary, logs: LogSet) -> list[int]:
    """Rows not done whose latest delivery a worker started and, per the logs, still holds:
    no end, and that worker has neither stopped nor started afresh since."""
    rows = []
    # The tasks seen, not the rows missing: a manifest may claim 2*10^7 of those.
    for row, t in sorted(_by_row(s).items()):
        if row not in s.audit.missing or not t.attempts:
            continue
        a = t.attempts[-1]
        life = logs.workers.get(a.worker)
        if a.outcome == UNFINISHED and (life is None or life.holds_since(a.start)):
            rows.append(row)
    return rows


def _by_row(s: RunSummary) -> dict[int, TaskRecord]:
    return {t.row: t for t in s.tasks if t.row is not None}


def _from_logs(s: RunSummary, logs: LogSet, view: BrokerView | None) -> Whereabouts:
    if view is None:
        note = "judged from the logs alone (--logs-only)"
    else:
        note = f"broker not reachable: {view.note}; judged from the logs alone"
    active = _active(s, logs)
    return Whereabouts(
        "logs",
        note,
        _done_count(s),
        len(s.audit.dead),
        in_progress=len(active),
        missing=s.audit.missing.without(active),
        active=active,
    )


def _first_published(s: RunSummary, rows: RowSet, order: str, n: int) -> RowSet:
    """The n of these rows published first (longest-first: by dots, as the logs know;
    a row the logs have not seen counts as no dots, so those come last, by row)."""
    if order != "longest-first":
        return rows.head(n)
    dotted = sorted(
        ((t.dots, r) for r, t in _by_row(s).items() if t.dots and r in rows),
        key=lambda p: (-p[0], p[1]),
    )
    front = [r for _d, r in dotted[:n]]
    rest = rows.without(front).head(n - len(front))
    return RowSet([*rest.spans, *((r, r) for r in front)])


def _share(
    peers: list[tuple[Run, RunSummary]], logs: LogSet, q: QueueView, note: str
) -> dict[str, Whereabouts]:
    """Share out one queue's counts among the runs that used it, newest run first."""
    newest_first = sorted(peers, key=lambda p: run_order(p[0]), reverse=True)
    # With no consumer on the queue nobody holds a task, whatever the logs say: a worker
    # killed mid-task writes no end, and the broker has put its task back.
    active = {r.run_id: _active(s, logs) if q.consumers else [] for r, s in peers}
    ours_holding = sum(len(a) for a in active.values())
    # The management API's counts lag by up to 5 s; the logs may be newer.
    unacked = max(q.unacked or 0, ours_holding)
    ready = q.ready
    logged_dead = sum(len(s.audit.dead) for _r, s in peers)
    dead_extra = max(0, (q.dead or 0) - logged_dead)
    out: dict[str, Whereabouts] = {}
    rest: dict[str, RowSet] = {}
    for run, s in newest_first:
        w = Whereabouts("broker", note, _done_count(s), len(s.audit.dead), queue=q)
        w.in_progress = min(len(active[run.run_id]), unacked)
        w.active = active[run.run_id][: w.in_progress]
        unacked -= w.in_progress
        out[run.run_id] = w
        rest[run.run_id] = s.audit.missing.without(active[run.run_id])
    for run, s in newest_first:  # what is still in the queue is the newest work
        w, idle = out[run.run_id], rest[run.run_id]
        w.waiting = min(len(idle), ready)
        ready -= w.waiting
        w.in_progress_elsewhere = min(len(idle) - w.waiting, unacked)
        unacked -= w.in_progress_elsewhere
        w.dead_unlogged = min(len(idle) - w.waiting - w.in_progress_elsewhere, dead_extra)
        dead_extra -= w.dead_unlogged
        gone = len(idle) - w.waiting - w.in_progress_elsewhere - w.dead_unlogged
        # First in, first out: the earliest published left first.
        w.left = _first_published(s, idle, run.emitted.get("order", "file"), gone)
        if run.emit_status == "running":  # emit may still be publishing the rows not seen
            seen = RowSet.of(r for r in _by_row(s) if r in w.left)
            w.unpublished = len(w.left) - len(seen)
            w.left = seen
    _judge_left(list(out.values()), logs, q)
    return out


def _judge_left(ws: list[Whereabouts], logs: LogSet, q: QueueView) -> None:
    """Decide whether the tasks that left the queue were taken by another consumer."""
    running_here = sum(1 for life in logs.workers.values() if life.running_on(q.name))
    foreign_now = max(q.foreign_consumers or 0, q.consumers - running_here)
    left = sum(len(w.left) for w in ws)
    # Deliveries the broker counted that no `started` line here accounts for. Our workers
    # always ack by hand and never use basic.get; what they hold but have not logged yet
    # (prefetched) is at most the unacked count.
    unseen = None
    if q.delivered is not None:
        by_hand = max(0, q.delivered - logs.deliveries[q.name] - (q.unacked or 0))
        unseen = by_hand + (q.got or 0) + (q.auto_acked or 0)
    evidence = ""
    if foreign_now > 0:
        who = (
            "consumer that is not a worker"
            if foreign_now == 1
            else "consumers that are not workers"
        )
        evidence = f"the broker shows {foreign_now} {who} of these logs on {q.name}"
    elif unseen is not None and left and unseen >= left:
        evidence = (
            f"the broker counted {plural(unseen, 'delivery', 'deliveries')} from {q.name} "
            "that these logs do not show"
        )
    elif unseen:
        evidence = (
            f"the broker counted {plural(unseen, 'delivery', 'deliveries')} from {q.name} that "
            f"these logs do not show, fewer than the {left} tasks that left it"
        )
    for w in ws:
        w.foreign_consumers = foreign_now
        w.evidence = evidence
        w.taken_elsewhere = bool(w.left) and (
            foreign_now > 0 or (unseen is not None and unseen >= left)
        )
        w.missing = RowSet() if w.taken_elsewhere else w.left
