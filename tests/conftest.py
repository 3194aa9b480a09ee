"""The real broker every broker test runs against, and per-test queues and folders.

The session starts the project's own RabbitMQ node on TEST_BROKER_PORT (5673) with
scripts/broker, unless AMQP_URL names one. A broker that cannot start fails the run.
With BROKER_RABBITMQ=4 (make test-rabbitmq4) every node scripts/broker starts, the session's
and the tests' own, is RabbitMQ 4; the `broker_version` fixture says what the broker is.

Every test that uses a broker fixture (BROKER_FIXTURES, directly or through `env`, `queue`...)
is marked `broker`; `pytest -m "not broker"` runs the rest with no broker at all. Under
pytest-xdist (make test) the shared broker is started once, by whichever worker needs it
first, and stopped by the main process after the last worker is done; each worker starts
its own nodes on ports of its own (tests/helpers.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests import helpers
from tests.helpers import (
    BIN,
    BROKER_PORT,
    NODE_PORT,
    ROOT,
    SPAWNED,
    broker_script,
    management_call,
    node_port,
    port_clash,
    rabbitmq_version,
)

TEST_PORT = BROKER_PORT
#: The fixtures that reach a broker: the session's, a node of the test's own, the cluster.
BROKER_FIXTURES = frozenset({"broker_url", "make_node", "cluster"})
#: A folder the main pytest process makes for the session and every xdist worker sees
#: (they inherit its environment): the shared broker's lock and what its start said.
SESSION_DIR = "MC_TEST_SESSION_DIR"


def _broker(port: int, action: str) -> subprocess.CompletedProcess[str]:
    return broker_script(action, BROKER_PORT=str(port))


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the main process did this
        return
    workers = getattr(config.option, "numprocesses", None)  # xdist's -n, made a number
    clash = port_clash(workers if isinstance(workers, int) and workers > 0 else 1)
    if clash:
        raise pytest.UsageError(clash)
    os.environ[SESSION_DIR] = tempfile.mkdtemp(prefix="mc-test-session-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The main process, after every worker: stop the shared broker if this session started it."""
    if hasattr(config, "workerinput") or SESSION_DIR not in os.environ:
        return
    session = Path(os.environ.pop(SESSION_DIR))
    state = session / "broker.json"
    started = state.exists() and json.loads(state.read_text())["started"]
    if started and not os.environ.get("KEEP_BROKER"):
        _broker(TEST_PORT, "stop")
    shutil.rmtree(session, ignore_errors=True)


#: Tests that must run on one xdist worker, one after another, by where they are (node id
#: prefix): the group's name, and why.
TOGETHER = {
    # The module's tests share one 3-node cluster (its module fixture): on one worker it
    # forms once, instead of once on each worker that draws one of them (about 30 s of both
    # cores each time).
    "tests/test_cluster.py::": "cluster",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under -n: xdist's load scheduling, but each TOGETHER group is one unit of work.

    (xdist's own --dist loadgroup, by marker, does not group on pytest 9.2: it renames node
    ids through an attribute pytest no longer reads.)"""
    if config.getvalue("dist") != "load":  # another --dist asked for: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((g for p, g in TOGETHER.items() if nodeid.startswith(p)), nodeid)

    return Together(config, log)  # type: ignore[arg-type]


#: Under xdist the longest tests go first (a few minutes each, measured), then the other
#: slow ones, then the rest, so that none of them runs alone at the end while the other
#: workers have nothing left to do. Without xdist the order is the files' own.
LONGEST = (
    "tests/test_reliability.py::test_11_",  # 100,000 tasks
    "tests/test_cluster.py::",
    "tests/test_reliability.py::test_3_",
)


def _start_order(item: pytest.Item) -> tuple[int, int]:
    first = [i for i, prefix in enumerate(LONGEST) if item.nodeid.startswith(prefix)]
    if first:
        return (0, first[0])
    if item.get_closest_marker("slow"):
        return (1, 0)
    return (2, 0) if item.get_closest_marker("broker") else (3, 0)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)
    if "PYTEST_XDIST_WORKER" in os.environ:  # every worker sorts alike, as xdist needs
        items.sort(key=_start_order)


@pytest.fixture(autouse=True)
def _broker_only_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test not marked `broker` that calls scripts/broker fails, saying why."""
    helpers.BROKER_ALLOWED = request.node.get_closest_marker("broker") is not None
    yield
    helpers.BROKER_ALLOWED = True


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    while SPAWNED:
        SPAWNED.pop().kill()


def _shared_broker() -> dict[str, object]:
    """Start the session's broker unless it runs; the first worker to ask does it, under a
    lock, and the others read what its start said."""
    session = Path(os.environ[SESSION_DIR])
    with open(session / "broker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = session / "broker.json"
        if not state.exists():
            was_up = _broker(TEST_PORT, "status").returncode == 0
            started = _broker(TEST_PORT, "start")
            ok = started.returncode == 0
            said = started.stdout + started.stderr
            state.write_text(json.dumps({"ok": ok, "started": ok and not was_up, "said": said}))
        return json.loads(state.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def broker_url() -> str:
    url = os.environ.get("AMQP_URL")
    if url:
        return url
    state = _shared_broker()
    if not state["ok"]:
        pytest.fail(f"the test broker did not start:\n{state['said']}", pytrace=False)
    return f"amqp://guest:guest@localhost:{TEST_PORT}/%2F"


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


def _command_env(url: str, queue: str, logs: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "AMQP_"))}
    e.update(
        AMQP_URL=url,
        TASK_QUEUE=queue,
        TASK_LOG_DIR=str(logs),
        PATH=f"{BIN}:{e.get('PATH', '')}",
        PWD=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return e


@pytest.fixture
def env(broker_url: str, queue: str, logs: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for our commands: this test's broker, queue and log folder."""
    return _command_env(broker_url, queue, logs)


#: Where no broker listens (port 1): a command that tries to connect is refused at once.
NO_BROKER_URL = "amqp://guest:guest@localhost:1/%2F"


@pytest.fixture
def offline_env(logs: Path) -> dict[str, str]:
    """`env` for a test that needs no broker: its AMQP_URL is NO_BROKER_URL, and the test
    is not marked `broker`."""
    return _command_env(NO_BROKER_URL, f"test-{uuid.uuid4().hex[:10]}", logs)


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


#: This worker's own nodes take ports from here up (tests/helpers.py: TEST_NODE_PORT, 5690).
_NODE_PORT = NODE_PORT


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
        node = Node(node_port(port_offset), extra_conf, advanced_conf, management)
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
