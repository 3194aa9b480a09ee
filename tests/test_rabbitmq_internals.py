"""utils/rabbitmq/internals.py: each pika private passes its check on the installed pika,
behaves as we rely on, and steps aside to its fallback when the check fails (another
pika), with the commands still working."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pika
import pytest

from emitter.emit import EmitOptions, emit_rows
from tests.helpers import (
    ROOT,
    Relay,
    drain,
    events,
    management_call,
    no_traceback,
    our_connection,
)
from tests.untested_pika import UNTESTED
from utils import rabbitmq
from utils.errors import ConnectionLost
from utils.eventlog.log import EventLog
from utils.rabbitmq import internals
from utils.settings import Settings
from worker.consumer import consume


@pytest.fixture
def untested(monkeypatch):
    """Every check in internals.py fails from here on, as on a pika release not tested."""
    monkeypatch.setattr(internals, "TESTED_PIKA", frozenset())


def test_an_untested_pika_or_another_connection_makes_every_private_step_aside():
    found = internals.check(object(), version=UNTESTED)
    assert set(found.stepped_aside()) == {"answer_within", "server_properties", "async_side"}
    assert all(f"pika {UNTESTED} is not a version" in why for why in vars(found).values())
    tested = next(iter(internals.TESTED_PIKA))
    assert "not a SelectConnection" in internals.check(object(), version=tested).answer_within
    assert internals.closing_reason_reader(object(), UNTESTED)() is None


def test_every_private_passes_its_check_on_the_installed_pika(broker_url):
    """The red light for a pika upgrade: every check must pass on the pika we ship with."""
    with our_connection(broker_url) as conn:
        assert conn.checked.stepped_aside() == {}, (
            f"pika {pika.__version__}: {conn.checked.stepped_aside()}\n"
            "Run the suite, then add the version to TESTED_PIKA in utils/rabbitmq/internals.py "
            "and to the pika range in pyproject.toml and requirements.txt; or mend internals.py."
        )
        channel = conn.channel()
        assert internals.closing_reason_reader(channel) is not internals._unknown


# -- each private behaves as we rely on ---------------------------------------------------------
def test_server_version_is_what_the_broker_says_of_itself(broker_url):
    with our_connection(broker_url) as conn:
        version = rabbitmq.server_version(conn)
    assert len(version) == 3
    overview = management_call(broker_url, "GET", "api/overview")
    assert ".".join(map(str, version)) == overview["rabbitmq_version"]


def test_the_closing_reason_is_the_brokers_own_channel_close(broker_url):
    with our_connection(broker_url) as conn:
        channel = conn.channel()
        reason = internals.closing_reason_reader(channel)
        assert reason() is None
        channel.basic_ack(99)  # no such delivery: the broker closes the channel
        for _ in range(50):
            conn.process_data_events(0.1)
            if not channel.is_open:
                break
    assert isinstance(reason(), pika.exceptions.ChannelClosedByBroker)
    assert reason().reply_code == 406 and "unknown delivery tag 99" in reason().reply_text


def count_connections(monkeypatch) -> list[object]:
    """Every connection pika opens from now on (a blocking one wraps one of these)."""
    opened: list[object] = []
    init = pika.SelectConnection.__init__

    def counting(self, *args, **kwargs):
        opened.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(pika.SelectConnection, "__init__", counting)
    return opened


def emit_two(url: str, queue: str, logs):
    log = EventLog(logs / "emitter.log", echo=False)
    try:
        opts = EmitOptions(messages=("one .", "two ."))
        return emit_rows(Settings(urls=(url,), queue=queue), opts, log=log)
    finally:
        log.close()


def test_emit_declares_and_publishes_on_one_connection(broker_url, queue, logs, monkeypatch):
    opened = count_connections(monkeypatch)
    report = emit_two(broker_url, queue, logs)
    assert report.result.confirmed == 2 and report.result.error is None
    assert len(opened) == 1
    assert [b for _m, _p, b in drain(broker_url, queue)] == [b"one .", b"two ."]


# -- a failed check takes the fallback ----------------------------------------------------------
def test_with_an_untested_pika_emit_publishes_on_a_second_connection(
    broker_url, queue, logs, monkeypatch, untested
):
    opened = count_connections(monkeypatch)
    report = emit_two(broker_url, queue, logs)
    assert report.result.confirmed == 2 and report.result.error is None
    assert len(opened) == 2  # as before this door: one to declare, one to publish
    assert [b for _m, _p, b in drain(broker_url, queue)] == [b"one .", b"two ."]


def test_with_an_untested_pika_the_version_is_unknown_and_declaring_still_works(
    broker_url, queue, untested
):
    with our_connection(broker_url) as conn:
        assert set(conn.checked.stepped_aside()) == {
            "answer_within",
            "server_properties",
            "async_side",
        }
        assert rabbitmq.server_version(conn) == ()
        settings = Settings(urls=(broker_url,), queue=queue)
        _channel, info = rabbitmq.declare_queue(conn, settings, broker_url)
        assert info.created and info.queue_type == "quorum"


def test_with_an_untested_pika_a_closed_channel_is_lost_without_the_brokers_words(
    broker_url, queue, untested
):
    with our_connection(broker_url) as conn:
        consumer, _info = consume(conn, Settings(urls=(broker_url,), queue=queue), prefetch=1)
        consumer.ack(99)  # no such delivery: the broker closes the channel
        with pytest.raises(ConnectionLost, match="the channel was closed") as lost:
            for _ in range(50):
                consumer.pump(0.1)
        assert lost.value.reply_code is None and lost.value.consumer_timeout is None
        consumer.close()


def test_with_an_untested_pika_a_slow_answer_is_waited_for_not_cut_off(
    broker_url, monkeypatch, untested
):
    relay = Relay(int(urlsplit(broker_url).port or 5672))
    url = f"amqp://guest:guest@127.0.0.1:{relay.port}/%2F"
    conn, _url = rabbitmq.connect(Settings(urls=(url,)), client_name="test")
    monkeypatch.setattr(internals, "ANSWER_WITHIN", 0.5)
    relay.stall()
    threading.Timer(1.5, relay.resume).start()
    began = time.monotonic()
    try:
        assert rabbitmq.queue_counts(conn, "anything") is None  # answered, late
        assert time.monotonic() - began >= 1.0
    finally:
        conn.close()
        relay.close()


def untested_pika(command: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """One of our commands, run as if pika were a release nothing of ours was tested with."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.untested_pika", command, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_with_an_untested_pika_emit_work_and_tasks_report_still_work(env, logs):
    emit = untested_pika("emit", "-m", "one", "-m", "two", "-m", "three", env=env)
    out, _ = emit.communicate(timeout=60)
    assert emit.returncode == 0, out
    assert "all confirmed" in out and no_traceback(out)
    work = untested_pika("work", "--name", "w1", "--max-tasks", "3", env=env)
    out, _ = work.communicate(timeout=60)
    assert work.returncode == 0, out
    assert [e["event"] for e in events(logs / "worker-w1.log")].count("done") == 3
    report = untested_pika("tasks", "report", env=env)
    out, _ = report.communicate(timeout=60)
    assert report.returncode == 0, out
    assert no_traceback(out)
