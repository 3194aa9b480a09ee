"""What `tasks status` shows: the queue's counts from AMQP, rates from the management API.

Each part is gathered by a function of its own and rendered by one of its own, so that a
new part (the cluster's nodes and the queue's leader, say) is one more field, one more
gather step and one more render step, without touching the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import quote

from utils import rabbitmq
from utils.errors import ConnectionLost, TaskToolError
from utils.rabbitmq import ManagementUnavailable, default_management_url, fetch_json
from utils.settings import Settings, mask_url, url_host, url_vhost
from utils.text import plural


@dataclass
class QueuePart:
    """The work queue and its dead-letter queue, as AMQP sees them right now."""

    name: str
    exists: bool
    ready: int | None = None
    consumers: int | None = None
    unacked: int | None = None  # only the management API knows it
    queue_type: str | None = None
    dead_queue: str = ""
    dead: int | None = None  # None: there is no dead-letter queue (yet)
    #: What the queue lacks that we would have given it, with the command that fixes it.
    warnings: list[str] = field(default_factory=list)
    #: Why the counts are not AMQP's, when they are not.
    note: str = ""


@dataclass
class ManagementPart:
    """What the management API said, or why it said nothing."""

    url: str
    answered: bool = False
    note: str = ""
    publish_rate: float | None = None
    deliver_rate: float | None = None
    ack_rate: float | None = None


@dataclass
class NodePart:
    """One broker URL we were given, and whether it answers AMQP now."""

    node: str  # host:port
    up: bool
    note: str = ""


@dataclass
class ClusterPart:
    """The nodes behind the URLs, and the quorum queue's leader and members (from the API)."""

    nodes: list[NodePart]
    leader: str | None = None
    members: list[str] | None = None
    online: list[str] | None = None

    @property
    def offline(self) -> list[str]:
        return [m for m in self.members or [] if m not in (self.online or [])]


@dataclass
class Status:
    """Everything `tasks status` shows."""

    broker: str
    queue: QueuePart
    management: ManagementPart
    cluster: ClusterPart | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gather(settings: Settings, management_url: str | None) -> Status:
    """Ask the broker (AMQP) and its management API (HTTP) about the queue."""
    nodes = _node_parts(settings) if len(settings.urls) > 1 else None
    queue, url, stalled = _ask_queue(settings)
    mgmt_url = management_url or default_management_url(url)
    cluster = ClusterPart(nodes) if nodes is not None else None
    management = _management_part(
        queue, mgmt_url, url_vhost(url), fallback_url=url, cluster=cluster
    )
    if stalled is not None:
        if not management.answered:
            raise stalled  # neither AMQP nor the API told us anything about the queue
    elif queue.exists:
        conn, _ = rabbitmq.connect(settings, client_name="tasks status")
        try:
            if queue.queue_type is None:
                # The API did not say; ask AMQP (a probe, after we know the queue exists).
                queue.queue_type = rabbitmq.probe_queue_type(conn, settings.queue)
            queue.warnings = _warnings(conn, settings, url, mgmt_url)
        finally:
            conn.close()
    return Status(mask_url(url), queue, management, cluster)


def _ask_queue(settings: Settings, tries: int = 2) -> tuple[QueuePart, str, ConnectionLost | None]:
    """The queue's counts from AMQP, asking again on a new connection (on a cluster, maybe
    another node) when a node drops or does not answer the question (rabbitmq.internals.ANSWER_WITHIN).

    When no answer comes, the part says so and the management API is asked instead: a
    RabbitMQ 4 node can leave the question unanswered for minutes after a quorum queue's
    leader is killed, while the queue itself goes on working.
    """
    for _ in range(tries):
        conn, url = rabbitmq.connect(settings, client_name="tasks status")
        try:
            return _queue_part(conn, settings.queue), url, None
        except ConnectionLost as exc:
            lost = exc
        finally:
            conn.close()
    stalled = ConnectionLost(
        f"could not learn queue '{settings.queue}' from the broker at {url_host(url)}: "
        f"{lost.message}",
        "try again in a few seconds; on a cluster, `rabbitmqctl list_queues name leader "
        "online` on a node shows where the queue stands",
    )
    part = QueuePart(settings.queue, True, dead_queue=rabbitmq.dead_letter_name(settings.queue))
    part.note = f"AMQP did not answer ({lost.message}); the counts are the management API's"
    return part, url, stalled


def _warnings(conn: Any, settings: Settings, url: str, mgmt_url: str) -> list[str]:
    """What the queue lacks (a dead-letter target), as `work` says it too."""
    try:
        shape = rabbitmq.queue_shape(conn, settings.queue)
    except TaskToolError:  # a stream, say: `work` says what is wrong with it
        return []
    if shape is None:
        return []
    return rabbitmq.queue_warnings(settings, shape, url, management_url=mgmt_url)


def _node_parts(settings: Settings) -> list[NodePart]:
    """Ask every URL on its own whether a broker answers there."""
    parts = []
    for url in settings.urls:
        try:
            conn, _ = rabbitmq.connect(replace(settings, urls=(url,)), client_name="tasks status")
            conn.close()
            parts.append(NodePart(url_host(url), True))
        except TaskToolError as exc:
            parts.append(NodePart(url_host(url), False, exc.message))
    return parts


def _queue_part(conn: Any, name: str) -> QueuePart:
    dead_name = rabbitmq.dead_letter_name(name)
    counts = rabbitmq.queue_counts(conn, name)
    dead = rabbitmq.queue_counts(conn, dead_name)
    part = QueuePart(name, counts is not None, dead_queue=dead_name)
    if counts is not None:
        part.ready, part.consumers = counts
    if dead is not None:
        part.dead = dead[0]
    return part


def _management_part(
    queue: QueuePart,
    mgmt_url: str,
    vhost: str,
    fallback_url: str,
    cluster: ClusterPart | None = None,
) -> ManagementPart:
    part = ManagementPart(mask_url(mgmt_url))
    if not queue.exists:
        part.note = "the queue does not exist, so there is nothing to ask the management API"
        return part
    path = f"api/queues/{quote(vhost, safe='')}/{quote(queue.name, safe='')}"
    try:
        data = fetch_json(mgmt_url, path, fallback_url)
    except ManagementUnavailable as exc:
        part.note = (
            f"the management API at {part.url} did not answer ({exc}); unacked count "
            "and rates are unknown (enable rabbitmq_management, or set --management-url)"
        )
        return part
    part.answered = True
    if queue.note:  # AMQP did not answer: the API's counts (a few seconds old) stand in
        queue.ready = _int(data.get("messages_ready"))
        queue.consumers = _int(data.get("consumers"))
    queue.unacked = _int(data.get("messages_unacknowledged"))
    queue.queue_type = data.get("type") or queue.queue_type
    stats = data.get("message_stats") or {}
    part.publish_rate = _rate(stats, "publish_details")
    part.deliver_rate = _rate(stats, "deliver_get_details")
    part.ack_rate = _rate(stats, "ack_details")
    if cluster is not None and data.get("leader"):  # quorum queues only
        cluster.leader = str(data["leader"])
        cluster.members = [str(m) for m in data.get("members") or []]
        cluster.online = [str(m) for m in data.get("online") or []]
    return part


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) else None


def _rate(stats: dict[str, Any], key: str) -> float:
    details = stats.get(key) or {}
    rate = details.get("rate", 0.0) if isinstance(details, dict) else 0.0
    return float(rate) if isinstance(rate, (int, float)) else 0.0


def _n(v: int | None, unknown: str = "unknown") -> str:
    return unknown if v is None else str(v)


def render(s: Status) -> list[str]:
    """The status as lines for a person."""
    q, m = s.queue, s.management
    if not q.exists:
        lines = [f"queue '{q.name}' at {s.broker} does not exist (yet): 'emit' or 'work' create it"]
    else:
        lines = [
            f"queue '{q.name}' ({q.queue_type or 'type unknown'}) at {s.broker}",
            f"  ready {_n(q.ready)}, unacked {_n(q.unacked)}, consumers {_n(q.consumers)}",
        ]
    if q.note:
        lines.append(f"  note: {q.note}")
    if q.dead is not None:
        dead = plural(q.dead, "message")
    else:
        dead = "unknown" if q.note else "none (no dead letters yet)"
    lines.append(f"  dead-letter queue '{q.dead_queue}': {dead}")
    lines.extend(f"  warning: {w}" for w in q.warnings)
    if m.answered:
        lines.append(
            f"  rates (per second, from the management API): publish {m.publish_rate or 0:.1f}, "
            f"deliver {m.deliver_rate or 0:.1f}, ack {m.ack_rate or 0:.1f}"
        )
    elif m.note:
        lines.append(f"  note: {m.note}")
    if s.cluster is not None:
        c = s.cluster
        nodes = ", ".join(f"{n.node} {'up' if n.up else 'DOWN'}" for n in c.nodes)
        lines.append(f"  nodes: {nodes}")
        if c.leader:
            gone = f" ({', '.join(c.offline)} offline)" if c.offline else ""
            lines.append(
                f"  quorum: leader {c.leader}; {len(c.online or [])} of {len(c.members or [])} "
                f"members online{gone}"
            )
    return lines
