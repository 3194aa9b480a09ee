"""The real broker every broker test runs against, and per-test queues and folders.

The session starts the project's own RabbitMQ node on TEST_BROKER_PORT (5673) with
scripts/broker, unless AMQP_URL names one. A broker that cannot start fails the run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.helpers import BIN, ROOT

TEST_PORT = int(os.environ.get("TEST_BROKER_PORT", "5673"))


def _broker(port: int, action: str, extra_conf: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BROKER_PORT": str(port)}
    if extra_conf:
        env["BROKER_EXTRA_CONF"] = extra_conf
    return subprocess.run(
        [str(ROOT / "scripts" / "broker"), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


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


@pytest.fixture
def queue(broker_url: str) -> Iterator[str]:
    """A fresh queue name; the queue and its dead-letter queue are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        for q in (name, f"{name}.dead"):
            conn.channel().queue_delete(q)
    finally:
        conn.close()


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
