"""The real broker every broker test runs against, and per-test queues and folders.

The session starts the project's own RabbitMQ node on TEST_BROKER_PORT (5673) with
scripts/broker, unless AMQP_URL names one. A broker that cannot start fails the run.
With BROKER_RABBITMQ=4 (make test-rabbitmq4) every node scripts/broker starts, the session's
and the tests' own, is RabbitMQ 4; the `broker_version` fixture says what the broker is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.helpers import BIN, ROOT, SPAWNED, broker_script, management_call, rabbitmq_version

TEST_PORT = int(os.environ.get("TEST_BROKER_PORT", "5673"))


def _broker(port: int, action: str) -> subprocess.CompletedProcess[str]:
    return broker_script(action, BROKER_PORT=str(port))


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    while SPAWNED:
        SPAWNED.pop().kill()


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = os.environ.get("AMQP_URL")
    if url:
        yield url
        return
    was_up = _broker(TEST_PORT, "status").returncode == 0
    started = _broker(TEST_PORT, "start")
    if started.returncode != 0:
        pytest.fail(
            f"the test broker did not start:\n{started.stdout}{started.stderr}", pytrace=False
        )
    yield f"amqp://guest:guest@localhost:{TEST_PORT}/%2F"
    if not was_up and not os.environ.get("KEEP_BROKER"):
        _broker(TEST_PORT, "stop")


@pytest.fixture(scope="session")
def broker_version(broker_url: str) -> tuple[int, ...]:
    """The session broker's version, e.g. (4, 0, 5): for checks that hold on one version only."""
    return rabbitmq_version(broker_url)


@pytest.fixture
def queue(broker_url: str) -> Iterator[str]:
    """A fresh queue name; the queue, its dead letters, its event stream and the policy our
    tools set on it go afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        for q in (name, f"{name}.dead", f"{name}.events"):
            conn.channel().queue_delete(q)
    finally:
        conn.close()
    with contextlib.suppress(OSError):  # a broker without the management API has none
        management_call(broker_url, "DELETE", f"api/policies/%2F/{name}-tasks")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def env(broker_url: str, queue: str, logs: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for our commands: this test's broker, queue and log folder."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "AMQP_"))}
    e.update(
        AMQP_URL=broker_url,
        TASK_QUEUE=queue,
        TASK_LOG_DIR=str(logs),
        PATH=f"{BIN}:{e.get('PATH', '')}",
        PWD=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return e


class Node:
    """A RabbitMQ node of the test's own, on its own port, that the test may stop and kill.

    Started without the management plugin, so that it stops in about 3 s instead of 8
    (`management=True`: with it, on port + 10000, as the session's node).
    `extra_conf` adds lines to its rabbitmq.conf (e.g. "consumer_timeout = 3000");
    `advanced_conf` is its advanced.config, for what rabbitmq.conf cannot set (e.g.
    "[{rabbit, [{channel_tick_interval, 1000}]}].").
    """

    def __init__(
        self, port: int, extra_conf: str = "", advanced_conf: str = "", management: bool = False
    ) -> None:
        self.port = port
        self.extra_conf = extra_conf
        self.advanced_conf = advanced_conf
        self.management = management
        self.url = f"amqp://guest:guest@localhost:{port}/%2F"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return broker_script(
            *args,
            BROKER_PORT=str(self.port),
            BROKER_PLUGINS="rabbitmq_management" if self.management else "",
            BROKER_EXTRA_CONF=self.extra_conf,
            BROKER_ADVANCED_CONF=self.advanced_conf or "[].",
        )

    def try_start(self) -> subprocess.CompletedProcess[str]:
        """Start it, and return what scripts/broker said, whether or not it started."""
        return self._run("start")

    def start(self) -> None:
        r = self.try_start()
        if r.returncode != 0:
            pytest.fail(
                f"test node on {self.port} did not start:\n{r.stdout}{r.stderr}", pytrace=False
            )

    def stop(self) -> None:
        self._run("stop")

    def kill(self) -> None:
        r = self._run("kill")
        assert r.returncode == 0, r.stdout + r.stderr

    def ctl(self, *args: str) -> str:
        r = self._run("ctl", *args)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def wipe(self) -> None:
        """Forget the node's data, so the next start is a fresh node."""
        r = self._run("wipe")
        assert r.returncode == 0, r.stdout + r.stderr


#: Own nodes take ports from here up (TEST_NODE_PORT, default 5690).
_NODE_PORT = int(os.environ.get("TEST_NODE_PORT", "5690"))


@pytest.fixture
def make_node() -> Iterator[object]:
    """Start a node of the test's own: `node = make_node(extra_conf=...)`; stopped and wiped after.
    With started=False it is only made ready: the test starts it (`node.try_start()`)."""
    nodes: list[Node] = []

    def factory(
        extra_conf: str = "",
        port_offset: int = 0,
        advanced_conf: str = "",
        started: bool = True,
        management: bool = False,
    ) -> Node:
        node = Node(_NODE_PORT + port_offset, extra_conf, advanced_conf, management)
        node.stop()
        node.wipe()
        nodes.append(node)
        if started:
            node.start()
        return node

    yield factory
    for node in nodes:
        node.stop()
        node.wipe()


@pytest.fixture(params=["fast", "plain"])
def emit_env(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """`env`, once with emit's fast path (emitter/fastpath.py) and once with EMIT_FAST_PATH=0."""
    return {**env, "EMIT_FAST_PATH": "1" if request.param == "fast" else "0"}


@pytest.fixture(params=["fast", "plain"])
def work_env(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """`env`, once with the worker's fast ack (worker/fastack.py) and once with WORK_FAST_ACK=0."""
    return {**env, "WORK_FAST_ACK": "1" if request.param == "fast" else "0"}
