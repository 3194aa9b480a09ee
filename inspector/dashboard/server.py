"""The dashboard's server: the page, /api/state and /metrics, with the standard library's
ThreadingHTTPServer (it parses HTTP; we only route GETs), and the threads that keep the state.

One thread folds what the event source brings (every FOLD_EVERY s); one asks the broker
about the queue (every QUEUE_EVERY s, with inspector.status.gather, as `tasks status` does);
each request reads a snapshot under the same lock. The page polls /api/state once a second.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from inspector.dashboard.api import iso
from inspector.dashboard.sources import EventSource
from inspector.dashboard.state import DashboardState
from inspector.status import Status, gather
from utils.errors import BadInput, TaskToolError
from utils.settings import Settings
from utils.text import safe

log = logging.getLogger(__name__)

#: Seconds between two reads of the event source (a read that hit its chunk size goes on at once).
FOLD_EVERY = 0.2
#: Seconds between two questions to the broker about the queue.
QUEUE_EVERY = 2.0
#: Seconds a connection may stay silent (no request, or a request not finished) before the
#: server closes it (--idle-timeout): an idle or stalled client must not hold a thread.
IDLE_TIMEOUT = 30.0
#: The most digits `since` may have: it is a count of events folded, far below 10^18.
SINCE_DIGITS = 18

#: The page may run only its own script and style, fetch only from us, and be framed by nobody.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

#: What the package ships in static/: the name served at, the file, its content type.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def load_static() -> dict[str, bytes]:
    """The page's files, read once from the package."""
    folder = resources.files("inspector.dashboard").joinpath("static")
    names = {name for name, _ in STATIC_FILES.values()}
    return {name: folder.joinpath(name).read_bytes() for name in names}


def queue_json(s: Status) -> dict[str, Any]:
    """What the page and /metrics use of `tasks status`'s facts (URLs already masked)."""
    q, m = s.queue, s.management
    rates = None
    if m.answered:
        rates = {"publish": m.publish_rate, "deliver": m.deliver_rate, "ack": m.ack_rate}
    return {
        "name": q.name,
        "broker": s.broker,
        "exists": q.exists,
        "queue_type": q.queue_type,
        "ready": q.ready,
        "unacked": q.unacked,
        "consumers": q.consumers,
        "dead_queue": q.dead_queue,
        "dead": q.dead,
        "management": {"answered": m.answered, "url": m.url, "note": m.note},
        "rates": rates,
        "error": None,
        "checked_at": iso(time.time()),
    }


class QueueWatch:
    """Asks the broker about the queue every QUEUE_EVERY s; keeps the latest answer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest: dict[str, Any] | None = None

    def check(self) -> dict[str, Any]:
        """One look at the queue, or what went wrong."""
        try:
            self.latest = queue_json(gather(self.settings, self.settings.management_url))
        except TaskToolError as exc:
            self.latest = self._error(exc.message)
        except Exception as exc:  # a surprise from the client library: say it, keep watching
            log.debug("queue check failed", exc_info=True)
            self.latest = self._error(f"{type(exc).__name__}: {exc}")
        return self.latest

    def _error(self, message: str) -> dict[str, Any]:
        return {
            "name": self.settings.queue,
            "broker": self.settings.masked_urls,
            "error": message,
            "checked_at": iso(time.time()),
        }

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.check()
            stop.wait(QUEUE_EVERY)


class BadQuery(ValueError):
    """A request the dashboard cannot answer as asked (answered 400, with this message)."""


def state_query(query: dict[str, list[str]]) -> tuple[int, str | None, str | None]:
    """/api/state's (since, epoch, run) from the query; BadQuery when `since` is no version.

    `epoch` and `run` are only compared with ours, never parsed: any text will do.
    """
    since = query.get("since", ["0"])[0]
    # str.isdigit() is True for "²" and other digits int() refuses; and int() of a
    # 5,000-digit string raises: only ASCII digits, few enough for a count.
    if not (since.isascii() and since.isdigit() and len(since) <= SINCE_DIGITS):
        raise BadQuery(
            f"since={safe(since, 40)} is not a version: give the `version` of an earlier "
            "/api/state answer (a whole number, 0 or more), or leave it out"
        )
    return int(since), query.get("epoch", [None])[0], query.get("run", [None])[0]


def error_json(message: str) -> bytes:
    """The body of an error answer: {"error": message}."""
    return json.dumps({"error": message}).encode() + b"\n"


class Dashboard:
    """The state, what feeds it, and who may read it."""

    def __init__(
        self,
        source: EventSource,
        state: DashboardState,
        queue: QueueWatch | None = None,
        *,
        token: str | None = None,
        bind: str = "127.0.0.1",
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.source = source
        self.state = state
        self.queue = queue
        self.token = token
        self.bind = bind
        self.idle_timeout = idle_timeout
        self.cookie = "tasks_dashboard"
        self.static = load_static()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the threads --------------------------------------------------------------------------
    def start(self) -> None:
        """Start folding events and watching the queue."""
        targets: list[Any] = [self._fold_loop]
        if self.queue is not None:
            targets.append(self.queue.run)
        for target in targets:
            t = threading.Thread(target=target, args=(self._stop,), daemon=True, name="dashboard")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the threads (each wakes within a second) and let go of the source."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.source.close()

    def fold_once(self) -> int:
        """Fold what the source has now; how many events that was."""
        events = self.source.poll()
        if events:
            with self.lock:
                self.state.apply_all(events)
        return len(events)

    def _fold_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.fold_once()
            except Exception as exc:  # a bug must not freeze the page: say it, go on
                log.warning("folding events failed: %s", safe(f"{type(exc).__name__}: {exc}", 300))
                log.debug("the failure", exc_info=True)
            if not getattr(self.source, "more", False):
                stop.wait(FOLD_EVERY)

    # -- what is served -----------------------------------------------------------------------
    def state_json(self, since: int = 0, epoch: str | None = None, run: str | None = None) -> bytes:
        """/api/state: the snapshot as compact JSON."""
        queue = self.queue.latest if self.queue else None
        with self.lock:
            snap = self.state.snapshot(
                time.time(), since, epoch, queue, self.source.describe(), run_seen=run
            )
        # ASCII: a bidi override or C1 control from a line goes out escaped, and a lone
        # surrogate (a JSON-quoted value may name one) as \udXXX, which UTF-8 cannot carry.
        return json.dumps(snap, separators=(",", ":")).encode("ascii")

    def metrics_text(self) -> bytes:
        """/metrics: Prometheus text format."""
        queue = self.queue.latest if self.queue else None
        with self.lock:
            return self.state.metrics(queue, time.time()).encode("utf-8")

    # -- who may ask --------------------------------------------------------------------------
    def check_token(self, query: dict[str, list[str]], headers: Any) -> tuple[int, bool]:
        """(0 or an HTTP status refusing the request, whether to set the cookie)."""
        if self.token is None:
            return 0, False
        want = self.token.encode()
        given = query.get("token", [None])[0]
        if given is not None:
            ok = hmac.compare_digest(given.encode(), want)
            return (0, True) if ok else (HTTPStatus.FORBIDDEN, False)
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            ok = hmac.compare_digest(auth[7:].strip().encode(), want)
            return (0, False) if ok else (HTTPStatus.FORBIDDEN, False)
        try:
            morsel = SimpleCookie(headers.get("Cookie") or "").get(self.cookie)
        except CookieError:
            morsel = None
        if morsel is not None:
            ok = hmac.compare_digest(morsel.value.encode(), want)
            return (0, False) if ok else (HTTPStatus.FORBIDDEN, False)
        return HTTPStatus.UNAUTHORIZED, False

    def host_allowed(self, host: str | None) -> bool:
        """Without a token, answer only to names of this machine's loopback (or the bind
        address): a web page elsewhere that rebinds its own name to 127.0.0.1 is refused."""
        if self.token is not None or not host:
            return True
        try:
            name = urlsplit("//" + host).hostname or ""
        except ValueError:
            return False
        return name in ("localhost", self.bind) or is_loopback_ip(name)


class _Handler(BaseHTTPRequestHandler):
    """Routes GETs; the standard library does the HTTP."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tasks-dashboard"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # A read that waits longer (for the next request, or the rest of one) raises
        # TimeoutError, which handle_one_request takes as the end of the connection.
        self.connection.settimeout(self.server.app.idle_timeout)

    def do_GET(self) -> None:
        """Answer one GET: 400 for a request we cannot read, 500 (the server goes on) for
        a failure of ours, each with a short JSON error, never a dropped connection."""
        try:
            self._get()
        except BadQuery as exc:
            self._send(HTTPStatus.BAD_REQUEST, error_json(str(exc)), "application/json")
        except OSError:  # the client went away mid-answer: nothing to tell it
            self.close_connection = True
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            log.warning("answering GET %s failed: %s", safe(self.path, 200), safe(what, 300))
            log.debug("the failure", exc_info=True)
            self.close_connection = True
            self._send(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                error_json(
                    f"the dashboard failed to answer ({type(exc).__name__}); "
                    "its terminal says more, and the next request is answered afresh"
                ),
                "application/json",
            )

    def _get(self) -> None:
        app = self.server.app
        parts = urlsplit(self.path)  # (a path of "//..." the standard library made "/...")
        query = parse_qs(parts.query)
        if not app.host_allowed(self.headers.get("Host")):
            self._send(HTTPStatus.FORBIDDEN, b"unknown Host header\n", "text/plain; charset=utf-8")
            return
        refused, set_cookie = app.check_token(query, self.headers)
        if refused:
            text = (
                b"a token is needed: open the URL 'tasks dashboard' printed (with ?token=...)\n"
                if refused == HTTPStatus.UNAUTHORIZED
                else b"wrong token\n"
            )
            extra = {"WWW-Authenticate": "Bearer"} if refused == HTTPStatus.UNAUTHORIZED else {}
            self._send(refused, text, "text/plain; charset=utf-8", extra)
            return
        extra = {}
        if set_cookie and app.token:
            extra["Set-Cookie"] = (
                f"{app.cookie}={app.token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400"
            )
        path = parts.path
        if path in STATIC_FILES:
            name, ctype = STATIC_FILES[path]
            self._send(HTTPStatus.OK, app.static[name], ctype, extra)
        elif path == "/api/state":
            body = app.state_json(*state_query(query))
            self._send(HTTPStatus.OK, body, "application/json", extra)
        elif path == "/metrics":
            self._send(
                HTTPStatus.OK, app.metrics_text(), "text/plain; version=0.0.4; charset=utf-8"
            )
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"", "text/plain")

    def _send(
        self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), safe(format % args, 300))


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a page left open must not hold up Ctrl+C
    allow_reuse_address = True
    app: Dashboard

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a handler (a connection reset while reading a request): one line at
        debug level, where socketserver would print a traceback on stderr."""
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


def is_loopback_ip(name: str) -> bool:
    """Whether name is a loopback IP address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback(bind: str) -> bool:
    """Whether binding to this address keeps the dashboard on this machine."""
    if bind == "localhost" or is_loopback_ip(bind):
        return True
    try:
        infos = socket.getaddrinfo(bind, None)
    except OSError:
        return False
    return bool(infos) and all(is_loopback_ip(str(i[4][0])) for i in infos)


def make_server(app: Dashboard, bind: str, port: int) -> _Server:
    """Bind the server, or raise BadInput saying why it cannot."""
    cls = _Server6 if ":" in bind else _Server
    try:
        server = cls((bind.strip("[]"), port), _Handler)
    except socket.gaierror:
        raise BadInput(
            f"--bind {bind}: no such address", "give an IP address of this machine, or a name"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BadInput(
                f"port {port} on {bind} is in use (another dashboard?)",
                "pick another with --port (0 picks a free one)",
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BadInput(
                f"--bind {bind} is not an address of this machine",
                "give one of its addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (all)",
            ) from None
        if exc.errno == errno.EACCES:
            raise BadInput(
                f"not allowed to listen on port {port}", "pick a port above 1023 with --port"
            ) from None
        raise
    server.app = app
    return server


def page_url(bind: str, port: int, token: str | None) -> str:
    """The URL to open: this machine's name for a wildcard bind, with the token if any."""
    host = bind
    if bind in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")
