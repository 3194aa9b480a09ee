"""Publishing tasks with publisher confirms over a window of unconfirmed messages.

One connection carries the whole run: the one the queue was declared on, which goes on
asynchronously (utils/rabbitmq AsyncConnection; this module speaks no pika). Up to
`window` messages may be unconfirmed at once; confirms stream in (often many at a time,
`multiple=True`) and free room for more. If the connection drops, every unconfirmed
message is published again on the next connection (declared on as at first) with the
same message id, so a duplicate can be seen in the logs.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from emitter.fastpath import FastPath, open_fast_path
from utils import rabbitmq
from utils.errors import AccessRefused, BlockedTooLong, BrokerUnavailable, TaskToolError
from utils.eventlog.schema import BLOCKED, CONNECTION_LOST, RECONNECT_FAILED, RECONNECTED, UNBLOCKED
from utils.settings import Settings, url_host
from utils.task import Task

log = logging.getLogger(__name__)

#: How many messages may wait for their confirm at once.
DEFAULT_WINDOW = 2000
#: Errors after which the emitter tries to reconnect again (utils.rabbitmq raises only ours).
RECONNECT_ERRORS: tuple[type[BaseException], ...] = (TaskToolError,)
#: Reconnect back-off: first delay, and the cap, in seconds.
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 5.0
#: How often a nacked message is published again before it is reported.
MAX_NACK_RETRIES = 3


@dataclass
class PublishResult:
    """What happened to every task we were given."""

    published: int = 0  # basic.publish calls, republishes included
    confirmed: int = 0  # distinct tasks the broker confirmed
    republished: int = 0
    unroutable: list[Task] = field(default_factory=list)
    nacked: list[Task] = field(default_factory=list)
    reconnects: int = 0
    seconds: float = 0.0
    first_unconfirmed_row: int | None = None  # every row before it is confirmed
    published_fast: int = 0  # of `published`, how many went by emitter/fastpath.py
    error: TaskToolError | None = None
    url: str = ""


@dataclass
class _Pending:
    task: Task
    nacks: int = 0


class Publisher:
    """Publishes an iterator of tasks to the work queue, confirming every one."""

    def __init__(
        self,
        settings: Settings,
        *,
        window: int = DEFAULT_WINDOW,
        retry_for: float = 60.0,
        blocked_timeout: float = 300.0,
        on_confirm: Callable[[int], None] | None = None,
        on_event: Callable[..., object] | None = None,
        rows_ascending: bool = True,
        first_row: int = 1,
        fast_path: bool = True,
    ) -> None:
        self.settings = settings
        self.rows_ascending = rows_ascending
        self.first_row = first_row
        self.window = window
        self.retry_for = retry_for
        self.blocked_timeout = blocked_timeout
        self.fast_path = fast_path  # False: pika's public basic_publish only (EMIT_FAST_PATH=0)
        self._on_confirm = on_confirm or (lambda n: None)
        self._event = on_event or (lambda event, **kw: None)
        self.result = PublishResult()
        self._tasks: Iterator[Task] = iter(())
        self._exhausted = False
        self._retry: deque[_Pending] = deque()  # to publish again, before new tasks
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # delivery tag -> task
        self._returned: set[str] = set()
        self._next_tag = 1
        self._link: rabbitmq.AsyncConnection | None = None  # the connection publishing now
        self._finished = False
        self._lost: TaskToolError | None = None
        self._fatal: TaskToolError | None = None
        self._last_taken_row: int | None = None  # the row of the last task taken to publish
        self._bad_row = False  # the source raised at a bad row (stdin): stop there
        self._feed: queue_mod.Queue[object] | None = None  # rows read by a thread (stdin)
        self._starving = False  # _pump found the feed empty and waits to be woken
        self._fast: FastPath | None = None  # per channel: None publishes the plain way

    # -- the run ---------------------------------------------------------------------------
    def publish(
        self,
        tasks: Iterator[Task],
        url: str,
        *,
        live: bool = False,
        connection: rabbitmq.Connection | None = None,
    ) -> PublishResult:
        """Publish every task to the broker at `url`; returns when all are confirmed or the
        broker stayed away.

        connection: one open to `url` with the queue declared on it (emit_rows has one), to
        publish on; None: the publisher opens it. live: the tasks come from a source that
        may block (stdin). They are then read by a thread, so that confirms, heartbeats and
        a lost connection are handled meanwhile.
        """
        if connection is None:
            one_url = replace(self.settings, urls=(url,))
            connection = connect_and_declare(one_url, self.blocked_timeout)[0]
        self._tasks = tasks
        if live:
            self._feed = queue_mod.Queue(maxsize=self.window)
            threading.Thread(target=self._read_feed, name="emit-reader", daemon=True).start()
        self.result.url = url
        started = time.monotonic()
        deadline: float | None = None
        while True:
            self._run_connection(connection, url)
            if self._finished or self._fatal:
                break
            # The connection was lost with work left: reconnect with a capped back-off.
            reason = self._lost.message if self._lost else "unknown"
            self._requeue_pending()
            self._event(CONNECTION_LOST, reason=reason, unconfirmed=len(self._retry))
            if deadline is None:
                deadline = time.monotonic() + self.retry_for
            again = self._reconnect(deadline)
            if again is None:
                self._fatal = BrokerUnavailable(
                    f"the broker did not come back within {self.retry_for:g} s", ""
                )
                break
            connection, url = again
            self.result.url = url
            self.result.reconnects += 1
            self._event(RECONNECTED, node=url_host(url), republishing=len(self._retry))
            deadline = None
        self.result.seconds = time.monotonic() - started
        self.result.error = self._fatal
        self.result.first_unconfirmed_row = self._first_unconfirmed_row()
        return self.result

    def _reconnect(self, deadline: float) -> tuple[rabbitmq.Connection, str] | None:
        """Wait for the broker to answer again: a new connection, the queue declared on it
        again; None on time-out."""
        backoff = rabbitmq.Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        while time.monotonic() < deadline:
            time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
            try:
                return connect_and_declare(self.settings, self.blocked_timeout)[:2]
            except RECONNECT_ERRORS as exc:
                self._event(RECONNECT_FAILED, reason=getattr(exc, "message", str(exc)))
        return None

    def _run_connection(self, connection: rabbitmq.Connection, url: str) -> None:
        self._lost = None
        self._link = rabbitmq.AsyncConnection(connection, url, self)
        self._link.run()

    # -- what the connection tells (rabbitmq.Publishing) ------------------------------------
    def lost(self, error: TaskToolError) -> None:
        """The connection or channel went: reconnect, unless retrying cannot help."""
        if self._finished:
            return
        self._lost = error
        if isinstance(error, AccessRefused):
            self._fatal = error
        elif isinstance(error, BlockedTooLong):
            self._fatal = BrokerUnavailable(
                f"the broker blocked publishing for over {self.blocked_timeout:g} s "
                "(a memory or disk alarm)",
                "free memory or disk space on the broker's machine (or raise its "
                "watermark), then rerun as said",
            )

    def blocked(self, reason: str) -> None:
        """The broker blocks publishing: say so, and how long we wait."""
        self._event(BLOCKED, reason=reason, wait_up_to=f"{self.blocked_timeout:g}s")

    def unblocked(self) -> None:
        """The broker accepts publishes again."""
        self._event(UNBLOCKED)

    def ready(self, link: rabbitmq.AsyncConnection) -> None:
        """The confirm channel is open: start publishing (fast where it can)."""
        self._fast = None
        if self.fast_path:  # it checks pika itself, and may step aside
            self._fast = open_fast_path(link.connection, link.channel_number, self.settings.queue)
        self._next_tag = 1
        self._pump()

    # -- publishing and confirms ------------------------------------------------------------
    def _pump(self) -> None:
        """Publish until the window is full or there is nothing left, then maybe finish."""
        link = self._link
        if link is None or not link.is_open:
            return
        queue = self.settings.queue
        pending = self._pending
        fast = self._fast
        if fast is not None:
            fast.set_time(int(time.time()))
        while len(pending) < self.window:
            if self._retry:
                item = self._retry.popleft()
                self.result.republished += 1
            elif not self._exhausted:
                task = self._next_task()
                if task is None:
                    if self._exhausted:
                        continue
                    break  # the reader thread wakes us when it has a row
                self._last_taken_row = task.row
                item = _Pending(task)
            else:
                break
            if fast is not None and fast.publish(item.task):
                self.result.published_fast += 1
            else:
                link.publish(queue, item.task.encode(), item.task.properties())
            pending[self._next_tag] = item
            self._next_tag += 1
            self.result.published += 1
        if fast is not None:
            fast.flush()
        if self._exhausted and not pending and not self._retry:
            self._finished = True
            link.close()

    def _next_task(self) -> Task | None:
        """The next task, or None: either the source is done (self._exhausted) or, live, empty now."""
        try:
            got: object = next(self._tasks) if self._feed is None else self._take_fed()
        except StopIteration:
            got = _END
        except TaskToolError as exc:
            got = exc
        if got is None:
            return None
        if got is _END or isinstance(got, TaskToolError):
            self._exhausted = True
            if isinstance(got, TaskToolError):  # a bad row on stdin: stop, keep what is sent
                self._fatal = got
                self._bad_row = True
            return None
        return got  # type: ignore[return-value]

    def _take_fed(self) -> object:
        assert self._feed is not None
        try:
            return self._feed.get_nowait()
        except queue_mod.Empty:
            pass
        # Say we are waiting, then look once more: a row put in between is not missed, and
        # one put after this is announced by the reader (a spare wake-up is harmless).
        self._starving = True
        try:
            got = self._feed.get_nowait()
        except queue_mod.Empty:
            return None
        self._starving = False
        return got

    def _read_feed(self) -> None:
        """Thread: read the source into the feed, waking the I/O loop when it waits for rows."""
        assert self._feed is not None
        item: object
        it = self._tasks
        while True:
            try:
                item = next(it)
            except StopIteration:
                item = _END
            except TaskToolError as exc:
                item = exc
            self._feed.put(item)
            if self._starving:
                self._starving = False
                link = self._link
                if link is not None:
                    try:
                        link.call_threadsafe(self._pump)
                    except Exception:  # the loop is gone; the next connection pumps anyway
                        log.debug("could not wake the I/O loop", exc_info=True)
            if item is _END or isinstance(item, TaskToolError):
                return

    def confirmed(self, tag: int, multiple: bool, acked: bool) -> None:
        """The broker confirmed (or nacked) `tag`, and with `multiple` every tag before it."""
        pending = self._pending
        done: list[_Pending] = []
        if multiple:
            while pending:
                first = next(iter(pending))
                if first > tag:
                    break
                done.append(pending.pop(first))
        elif tag in pending:
            done.append(pending.pop(tag))
        confirmed = 0
        for item in done:
            if not acked:
                item.nacks += 1
                if item.nacks <= MAX_NACK_RETRIES:
                    self._retry.append(item)
                else:
                    self.result.nacked.append(item.task)
                continue
            if item.task.task_id in self._returned:
                self._returned.discard(item.task.task_id)
                self.result.unroutable.append(item.task)
                continue
            confirmed += 1
        if confirmed:
            self.result.confirmed += confirmed
            self._on_confirm(confirmed)
        self._pump()

    def returned(self, message_id: str | None) -> None:
        """A task came back unroutable (its confirm follows): it is not counted confirmed."""
        if message_id:
            self._returned.add(message_id)

    def _requeue_pending(self) -> None:
        """Everything unconfirmed on the lost channel is published again, in its order."""
        items = list(self._pending.values())
        self._pending.clear()
        self._returned.clear()
        self._retry.extendleft(reversed(items))

    def _first_unconfirmed_row(self) -> int | None:
        """The smallest row not confirmed: every row before it is."""
        rows = [p.task.row for p in self._pending.values()]
        rows += [p.task.row for p in self._retry]
        rows += [t.row for t in self.result.unroutable + self.result.nacked]
        if self.rows_ascending:
            # Rows are taken in increasing order: the first one never taken is the next row.
            if not self._exhausted or self._bad_row:
                taken = self._last_taken_row
                rows.append(self.first_row if taken is None else taken + 1)
        elif not self._exhausted:
            rows += [t.row for t in self._tasks]
        known = [r for r in rows if r is not None]
        return min(known) if known else None


#: Marks the end of the source in the feed.
_END = object()


def connect_and_declare(
    settings: Settings, blocked_timeout: float
) -> tuple[rabbitmq.Connection, str, rabbitmq.QueueInfo]:
    """A connection to publish on, with the work queue declared on it (and what was found)."""
    conn, url = rabbitmq.connect(settings, client_name="emit", blocked_timeout=blocked_timeout)
    try:
        info = rabbitmq.declare_for_publishing(conn, settings, url)
    except BaseException:
        conn.close()
        raise
    return conn, url, info
