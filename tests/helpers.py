"""Running our commands as real processes, and waiting on events in their logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

from utils.eventlog.format import parse_line
from utils.rabbitmq import Connection, connect, server_version
from utils.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Upper bound for waiting on an event; tests wait for the event, not for this long.
WAIT = 60.0

#: Which pytest-xdist worker this process is (gw0, gw1...; 0 without xdist) and how many
#: there are. Each worker starts its own nodes on ports of its own, so that two tests that
#: stop, kill or wipe "their" node never meet on one.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0")
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
#: The session's shared broker: one for every worker, started once (tests/conftest.py).
BROKER_PORT = int(os.environ.get("TEST_BROKER_PORT", "5673"))
#: A worker's own nodes take ports NODE_PORT + 0 .. NODE_PORT + NODE_PORTS - 1 (make_node's
#: port_offset, and a TLS listener); worker N's start NODE_PORTS * N above worker 0's.
NODE_PORTS = 14
NODE_PORT = int(os.environ.get("TEST_NODE_PORT", "5690")) + WORKER * NODE_PORTS
#: A worker's 3-node test cluster (tests/test_cluster.py), likewise.
CLUSTER_PORTS = 3
CLUSTER_PORT = int(os.environ.get("TEST_CLUSTER_PORT", "5811")) + WORKER * CLUSTER_PORTS


def node_port(offset: int) -> int:
    """The port of this worker's own node number `offset` (0 .. NODE_PORTS - 1)."""
    assert 0 <= offset < NODE_PORTS, f"port_offset {offset} is past this worker's {NODE_PORTS}"
    return NODE_PORT + offset


def port_clash(workers: int) -> str:
    """Why the test ports of `workers` xdist workers would overlap, or '' when they do not:
    the shared broker, every worker's own nodes and every worker's cluster apart."""
    base_node = NODE_PORT - WORKER * NODE_PORTS
    base_cluster = CLUSTER_PORT - WORKER * CLUSTER_PORTS
    ranges = {
        "TEST_BROKER_PORT": range(BROKER_PORT, BROKER_PORT + 1),
        "TEST_NODE_PORT": range(base_node, base_node + NODE_PORTS * workers),
        "TEST_CLUSTER_PORT": range(base_cluster, base_cluster + CLUSTER_PORTS * workers),
    }
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if set(ranges[a]) & set(ranges[b]):
                return (
                    f"with {workers} workers, {a} takes ports {ranges[a].start}-"
                    f"{ranges[a].stop - 1} and {b} {ranges[b].start}-{ranges[b].stop - 1}: "
                    f"they overlap. Set them further apart (each worker's nodes take "
                    f"{NODE_PORTS} ports from TEST_NODE_PORT, its cluster {CLUSTER_PORTS} from "
                    "TEST_CLUSTER_PORT), or run fewer workers (-n)."
                )
    top = max(r.stop - 1 for r in ranges.values())
    if top > 45535:
        return f"the test ports reach {top}; scripts/broker takes ports up to 45535 (+20000)."
    return ""


def dashboard_port() -> int:
    """The dashboard's port in the tests: 0 (any free one), or with TEST_DASHBOARD_PORT set,
    that port plus this worker's number, so that workers never share one."""
    pinned = int(os.environ.get("TEST_DASHBOARD_PORT", "0"))
    return pinned + WORKER if pinned else 0


#: False while a test not marked `broker` runs (tests/conftest.py): such a test must start
#: no node, or `pytest -m "not broker"` would need one.
BROKER_ALLOWED = True


def broker_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/broker with extra environment (BROKER_PORT=..., CLUSTER_PORT=...)."""
    if not BROKER_ALLOWED:
        raise AssertionError(
            "scripts/broker called by a test not marked broker: give it a broker fixture "
            "(BROKER_FIXTURES in tests/conftest.py), which marks it"
        )
    return subprocess.run(
        [str(ROOT / "scripts" / "broker"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def rabbitmq_version(url: str) -> tuple[int, ...]:
    """The broker's version, e.g. (4, 0, 5), as it tells every AMQP client when it connects."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return server_version(conn)
    finally:
        conn.close()


@contextlib.contextmanager
def our_connection(url: str) -> Iterator[Connection]:
    """A connection as our commands open one (utils/rabbitmq connect), closed afterwards."""
    conn, _url = connect(Settings(urls=(url,)), client_name="test")
    try:
        yield conn
    finally:
        conn.close()


#: The RabbitMQ version scripts/broker starts every node of ours on: "3" (Debian 12's 3.10,
#: the default), "4.0" (make test-rabbitmq4) or "4.3" (make test-rabbitmq43).
RABBITMQ = {"4": "4.0"}.get(
    os.environ.get("BROKER_RABBITMQ") or "3", os.environ.get("BROKER_RABBITMQ") or "3"
)
#: The same as a version tuple, to compare: (3,), (4, 0) or (4, 3).
RABBITMQ_VERSION = tuple(int(n) for n in RABBITMQ.split("."))
#: Where scripts/broker keeps a node of that version: .broker/<prefix><port>/.
NODE_DIR_PREFIX = {"3": "", "4.0": "rmq4-", "4.3": "rmq43-"}[RABBITMQ]


def run(
    cmd: str, *args: str, env: dict[str, str], input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run emit, work or tasks to completion and capture what it printed."""
    return subprocess.run(
        [str(BIN / cmd), *args],
        env=env,
        input=input.decode() if input else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env.get("PWD", str(ROOT)),
    )


@dataclass
class Proc:
    """A command running in the background, in its own process group."""

    popen: subprocess.Popen[bytes]
    out: Path

    def signal(self, sig: int) -> None:
        os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._ask_for_stacks()
            raise AssertionError(
                f"{self.popen.args} still runs after {timeout:g} s:\n{self.output()[-6000:]}"
            ) from None

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def _ask_for_stacks(self) -> None:
        """A worker prints where each of its threads is on SIGUSR1: wait for it to say so."""
        self.signal(signal.SIGUSR1)
        with contextlib.suppress(AssertionError):  # (other commands die of SIGUSR1)
            wait_for(
                "the stacks",
                lambda: "most recent call first" in self.output() or self.popen.poll(),
                timeout=10,
            )

    def where(self) -> str:
        """For a failing test's message: exited how, or (a worker) where its threads are."""
        code = self.popen.poll()
        if code is None:
            self._ask_for_stacks()
        state = "running" if code is None else f"exited {code}"
        return f"{self.out.name} ({state}):\n{self.output()[-3000:]}"


#: Every process spawn() started; tests/conftest.py kills what is left after each test, so
#: a failed test never leaves a worker behind to steal the next test's tasks.
SPAWNED: list[Proc] = []


def spawn(cmd: str, *args: str, env: dict[str, str], out: Path) -> Proc:
    f = open(out, "wb")  # noqa: SIM115 - the child holds it
    p = subprocess.Popen(
        [str(BIN / cmd), *args],
        env=env,
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=env.get("PWD", str(ROOT)),
    )
    f.close()
    proc = Proc(p, out)
    SPAWNED.append(proc)
    return proc


class StdinEmit:
    """emit running in the background, reading rows the test writes to its stdin."""

    def __init__(self, *args: str, env: dict[str, str], out: Path) -> None:
        self.out = out
        with open(out, "wb") as f:
            self.popen = subprocess.Popen(
                [str(BIN / "emit"), "-", *args],
                env=env,
                stdin=subprocess.PIPE,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=env.get("PWD", str(ROOT)),
            )

    def feed(self, rows: list[str]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write("".join(f"{r}\n" for r in rows).encode())
        self.popen.stdin.flush()

    def close_input(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()

    def output(self) -> str:
        return self.out.read_text(errors="replace")


def events(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [e for e in (parse_line(x) for x in lines) if e is not None]


def wait_for(
    what: str,
    check: Callable[[], object],
    timeout: float = WAIT,
    alive: Proc | None = None,
    detail: Callable[[], str] | None = None,
) -> object:
    """Poll check() until it returns something truthy; fail with `what` if it never does
    (and with `detail()`, what a reader needs to see why, if given)."""
    end = time.monotonic() + timeout
    pause = 0.02  # grows to 0.5 s, so that a costly check is not run back to back
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        if alive is not None and alive.popen.poll() is not None:
            raise AssertionError(f"process exited before {what}:\n{alive.output()}")
        time.sleep(pause)
        pause = min(0.5, pause * 1.5)
    said = f":\n{detail()}" if detail is not None else ""
    raise AssertionError(f"timed out waiting for {what}{said}")


def wait_for_event(
    path: Path, event: str, count: int = 1, alive: Proc | None = None, **fields: str
) -> list[dict[str, str]]:
    def check() -> list[dict[str, str]]:
        found = [
            e
            for e in events(path)
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]
        return found if len(found) >= count else []

    return wait_for(f"{count}x {event} {fields} in {path.name}", check, alive=alive)  # type: ignore[return-value]


def drain(url: str, queue: str) -> list[tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]]:
    """Take every message off a queue with basic_get (acking them)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        out = []
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((method, props, body))
    finally:
        conn.close()


def queue_ready(url: str, queue: str) -> int:
    """Messages ready in the queue (0 while it does not exist)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if conn.is_open:
            conn.close()


def queue_counts(url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) from a passive declare."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = conn.channel().queue_declare(queue, passive=True)
        return ok.method.message_count, ok.method.consumer_count
    finally:
        conn.close()


def management_call(url: str, method: str, path: str) -> Any:
    """One call to the management API of the broker at AMQP `url` (port + 10000), as guest:
    its JSON answer, or None (nothing, or 404)."""
    import base64
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = urllib.request.Request(
        f"http://{parts.hostname}:{(parts.port or 5672) + 10000}/{path}", method=method
    )
    token = base64.b64encode(b"guest:guest").decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return json.loads(text) if text.strip() else None


def task_policy_of(url: str, queue: str) -> dict[str, Any] | None:
    """The policy our tools set on `queue` (`<queue>-tasks`), or None."""
    return management_call(url, "GET", f"api/policies/%2F/{queue}-tasks")  # type: ignore[no-any-return]


def declare_like_the_tutorial(url: str, queue: str) -> None:
    """Declare `queue` exactly as the RabbitMQ tutorial's new_task.py and worker.py do (2026):
    durable, x-queue-type quorum, nothing else, not passive; raises what the broker says."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(
            queue=queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
    finally:
        if conn.is_open:
            conn.close()


def declare_queue(url: str, queue: str) -> None:
    """Declare the work queue as our tools do (durable, quorum), for a test that writes a
    run's emit lines by hand: a report calls its tasks missing only where the queue exists."""
    declare_like_the_tutorial(url, queue)


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


def done_rows(logs: Path) -> set[int]:
    """Rows that some worker in this log folder logged as done."""
    return {
        int(e["row"])
        for f in logs.glob("worker-*.log*")  # rotated files too
        for e in events(f)
        if e["event"] == "done" and e.get("row", "").isdigit()
    }


def stop_when_done(procs: list[Proc], logs: Path, rows: int) -> None:
    """Wait until rows 1..rows are all done, then warm-stop the workers; each must exit 0.

    Waiting on the logs (not --exit-when-idle) keeps a slow start on a busy machine from
    making a worker leave before the tasks arrive.
    """
    wait_for(f"rows 1..{rows} done", lambda: done_rows(logs) >= set(range(1, rows + 1)))
    for p in procs:
        p.signal(signal.SIGTERM)
    for p in procs:
        assert p.wait() == 0, p.output()


def stream_events(env: dict[str, str]) -> list[dict[str, str]]:
    """Every event in the test queue's event stream (<queue>.events) up to now, each once."""
    from inspector.stream import iter_events
    from utils.settings import Settings

    settings = Settings(urls=(env["AMQP_URL"],), queue=env["TASK_QUEUE"])
    return list(iter_events(settings))


def wait_for_stream_event(env: dict[str, str], event: str, **fields: str) -> dict[str, str]:
    """Wait until the event stream holds an event with these fields (events are sent in
    batches, a little after the log has them)."""

    def check() -> dict[str, str] | None:
        for e in stream_events(env):
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items()):
                return e
        return None

    return wait_for(f"{event} {fields} in the event stream", check)  # type: ignore[return-value]


def broker_report(
    env: dict[str, str], run_id: str, cwd: Path | None = None, notes: list[str] | None = None
) -> dict[str, Any]:
    """`tasks report --source broker --run ID --json`: the run as the event stream tells it
    (and its notes, on stderr, appended to `notes` if given)."""
    r = subprocess.run(
        [str(BIN / "tasks"), "report", "--source", "broker", "--run", run_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd or env.get("PWD", str(ROOT)),
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr
    if notes is not None:
        notes.append(r.stderr)
    return json.loads(r.stdout)["runs"][-1]  # type: ignore[no-any-return]


class Relay:
    """A TCP relay to the broker that can hold back the broker's answers (stall) and pass
    them on again (resume): a node that keeps the connection open and answers nothing."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._to = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._answering = threading.Event()
        self._answering.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    def close(self) -> None:
        self._server.close()
        self._answering.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self._to)
            for src, dst, held in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, held), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if held:
                    self._answering.wait()
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
