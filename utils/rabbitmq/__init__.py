"""The rabbitmq wing: the only code that speaks pika (apart from utils/task.py, the message
format, and the two fast paths, emitter/fastpath.py and worker/fastack.py).

Its rooms, and which way they import (each imports only those above it):

| module | holds |
|---|---|
| `errors.py` | pika's exceptions turned into ours, in one place: no other module names them |
| `internals.py` | every use of a pika private, each checked when a connection opens and gated on the tested pika (TESTED_PIKA), with a fallback |
| `connect.py` | parameters from a URL, TLS, connect with failover, back-off, the broker's version, the asynchronous connection emit publishes on |
| `channel.py` | channels that raise only our errors: Channel (settle, get) and Consuming |
| `management.py` | the management API (HTTP), where it answers |
| `queues.py` | the shape of our queues and declaring them: arguments, names, our policy, probe, counts, what an existing queue lacks |
| `publish.py` | confirmed copies and the event stream's publisher |

Callers import from here: `from utils import rabbitmq`, then `rabbitmq.connect(...)`.
Every function and class raises only the errors of utils.errors.
"""

from utils.rabbitmq.channel import Channel, Consuming, Delivery, open_channel
from utils.rabbitmq.connect import (
    AsyncConnection,
    Backoff,
    Connection,
    Publishing,
    connect,
    quiet_pika,
    server_version,
)
from utils.rabbitmq.errors import (
    timed_out,
)
from utils.rabbitmq.internals import answer_within
from utils.rabbitmq.management import (
    ManagementUnavailable,
    default_management_url,
    fetch_json,
)
from utils.rabbitmq.publish import (
    StreamPublisher,
    declare_stream,
    login_user,
    publish_copy,
    stream_arguments,
    stream_exists,
)
from utils.rabbitmq.queues import (
    DELIVERY_LIMIT,
    QueueInfo,
    consumer_timeout_on_consume,
    dead_letter_name,
    declare_for_publishing,
    declare_queue,
    probe_queue_type,
    purge_queue,
    queue_counts,
    queue_shape,
    queue_warnings,
)

__all__ = [
    "DELIVERY_LIMIT",
    "AsyncConnection",
    "Backoff",
    "Channel",
    "Connection",
    "Consuming",
    "Delivery",
    "ManagementUnavailable",
    "Publishing",
    "QueueInfo",
    "StreamPublisher",
    "answer_within",
    "connect",
    "consumer_timeout_on_consume",
    "dead_letter_name",
    "declare_for_publishing",
    "declare_queue",
    "declare_stream",
    "default_management_url",
    "fetch_json",
    "login_user",
    "open_channel",
    "probe_queue_type",
    "publish_copy",
    "purge_queue",
    "queue_counts",
    "queue_shape",
    "queue_warnings",
    "quiet_pika",
    "server_version",
    "stream_arguments",
    "stream_exists",
    "timed_out",
]
