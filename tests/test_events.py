"""The event stream <queue>.events: work and emit send what they log; `tasks report --source
broker` reads it back from anywhere, with no log folder."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path

import pika
import pytest

from inspector.stream import read_stream
from tests.helpers import (
    broker_report,
    declare_queue,
    events,
    run,
    spawn,
    stream_events,
    wait_for,
    wait_for_event,
)
from utils import rabbitmq
from utils.eventlog.format import format_event
from utils.eventlog.log import EventLog
from utils.eventlog.stream import (
    KIND_EVENTS,
    EventsConfig,
    EventStream,
    check_max_age,
    parse_size,
    stream_name,
)
from utils.settings import Settings


# -- without a broker ---------------------------------------------------------------------------
def test_retention_options_take_rabbitmqs_forms():
    assert check_max_age("7D") == "7D"
    assert parse_size("1GB") == 10**9
    assert parse_size("500mb") == 500 * 10**6
    assert parse_size("2048") == 2048
    for bad in ("7 days", "0D", "D"):
        with pytest.raises(ValueError):
            check_max_age(bad)
    for bad in ("lots", "0", "-5MB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_log_hands_each_write_to_its_sink_urgent_unless_deferred(tmp_path):
    log = EventLog(tmp_path / "w.log", echo=False)
    got: list[tuple[str, bool]] = []
    log.sink = lambda text, urgent: got.append((text, urgent))
    log.defer("started", {"task": "t-1"})
    log.defer("done", {"task": "t-1"})
    log.flush()
    log.event("failed", task="t-2", reason="a b")
    log.close()
    file_lines = (tmp_path / "w.log").read_text().splitlines()
    assert [t for t, _u in got] == ["\n".join(file_lines[:2]), file_lines[2]]
    assert [u for _t, u in got] == [False, True]


def test_a_full_buffer_drops_new_events_counts_them_and_says_so_at_exit(tmp_path):
    settings = Settings(urls=("amqp://guest:guest@localhost:1/%2F",), queue="q")
    stream = EventStream(settings, EventsConfig(), "test", buffer_chars=100)
    log = EventLog(tmp_path / "w.log", echo=False)
    stream.attach(log)
    stream._thread = threading.Thread(target=lambda: None)  # no sender: nothing is sent
    for n in range(10):
        log.event("done", task=f"t-{n}")
    dropped = stream._dropped
    assert dropped > 0
    stream._tell_dropped(log)  # (this event goes to the log; the full buffer drops it too)
    told = [e for e in events(tmp_path / "w.log") if e["event"] == "events_dropped"]
    assert told and int(told[0]["dropped"]) == dropped


# -- on the broker ------------------------------------------------------------------------------
def machine(tmp_path: Path, env: dict[str, str], name: str) -> tuple[Path, dict[str, str]]:
    """A folder standing for a machine of its own: its own logs/, its own working folder."""
    home = tmp_path / name
    (home / "logs").mkdir(parents=True)
    return home, {**env, "TASK_LOG_DIR": str(home / "logs"), "PWD": str(home)}


def test_three_machines_one_report_from_the_broker_with_no_log_folder(env, tmp_path, queue):
    homes = [machine(tmp_path, env, f"m{i}") for i in (1, 2, 3)]
    workers = []
    for i, (home, e) in enumerate(homes, start=1):
        p = spawn(
            "work", "--name", f"m{i}", "--seconds-per-dot", "0.01", "-q", env=e, out=home / "out"
        )
        wait_for_event(home / "logs" / f"worker-m{i}.log", "worker_ready", alive=p)
        workers.append(p)
    emitter_home, emitter_env = machine(tmp_path, env, "emitter")
    csv = emitter_home / "rows.csv"
    csv.write_text("".join(f"Task {n} {'.' * (n % 4)}\n" for n in range(1, 31)))
    r = run("emit", str(csv), "--quiet", env=emitter_env)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().rsplit(" ", 1)[1]

    def done_by() -> dict[int, str]:
        return {
            int(e["row"]): e["worker"]
            for home, _e in homes
            for e in events(next((home / "logs").glob("worker-*.log")))
            if e["event"] == "done"
        }

    wait_for("30 rows done", lambda: len(done_by()) == 30)
    for p in workers:
        p.signal(signal.SIGTERM)
    for p in workers:
        assert p.wait() == 0, p.output()
    truth = done_by()

    # From an empty folder, with no logs at all: every task, and who ran it.
    empty, empty_env = machine(tmp_path, env, "anywhere")
    got = broker_report(empty_env, run_id, cwd=empty)
    assert got["audit"]["missing"] == [] and got["audit"]["emitted"] == 30
    assert {t["row"]: t["worker"] for t in got["tasks"]} == truth
    assert got["source"] == str(csv)
    assert list((empty / "logs").iterdir()) == []

    # The same report as from all four machines' logs put together, to the last field (but
    # for whereabouts: the broker's counts, asked at another moment).
    together = tmp_path / "together"
    together.mkdir()
    for home, _e in [*homes, (emitter_home, emitter_env)]:
        for f in (home / "logs").iterdir():
            shutil.copy(f, together / f.name)
    r = run("tasks", "report", str(together), "--json", "--run", run_id, env=empty_env)
    merged = json.loads(r.stdout)["runs"][0]
    assert {**merged, "whereabouts": None} == {**got, "whereabouts": None}

    # One machine's own report says that the others ran elsewhere.
    home, e = homes[0]
    r = run("tasks", "report", env=e)
    mine = sum(1 for w in truth.values() if w == "m1")
    assert f"{30 - mine} of 30 tasks of run {run_id} ran on workers whose logs are not here" in (
        r.stdout
    ), r.stdout
    assert "--source broker" in r.stdout


def test_no_events_sends_nothing_to_the_stream(env, queue, broker_url):
    quiet = {**env, "TASK_EVENTS": "0"}
    r = run("emit", "--message", "Hello.", "--quiet", env=quiet)
    assert r.returncode == 0, r.stderr
    r = run("work", "--no-events", "--max-tasks", "1", "--seconds-per-dot", "0", env=env)
    assert r.returncode == 0, r.stderr
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        assert rabbitmq.queue_counts(conn, stream_name(queue)) is None  # never even declared
    finally:
        conn.close()
    r = run("tasks", "report", "--source", "broker", env=env)
    assert r.returncode == 1
    assert f"there is no event stream '{queue}.events'" in r.stderr and "hint:" in r.stderr


def test_the_stream_is_bounded_and_every_event_carries_the_logs_fields(env, queue, broker_url):
    r = run("emit", "--message", "A.", "--message", "B", "--events-max-age", "2h", env=env)
    assert r.returncode == 0, r.stderr
    r = run("work", "--max-tasks", "2", "--seconds-per-dot", "0", "-q", env=env)
    assert r.returncode == 0, r.stderr
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        # Declaring it again with the very same arguments succeeds only if it has them all:
        # a stream, 2 hours, the default size bound. A 7-day one would be refused (406).
        args = EventsConfig(max_age="2h").arguments()
        assert args["x-queue-type"] == "stream"
        conn.channel().queue_declare(stream_name(queue), durable=True, arguments=args)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            conn.channel().queue_declare(
                stream_name(queue), durable=True, arguments=EventsConfig().arguments()
            )
        assert info.value.reply_code == 406
    finally:
        conn.close()
    logged = [e for f in sorted(Path(env["TASK_LOG_DIR"]).glob("*.log")) for e in events(f)]
    sent = stream_events(env)
    key = lambda e: (e["ts"], e["event"], e.get("task", ""))  # noqa: E731
    assert sorted(sent, key=key) == sorted(logged, key=key)
    manifest = [e for e in sent if e["event"] == "run_manifest"]
    assert len(manifest) == 1 and manifest[0]["rows"] == "1-2" and manifest[0]["total"] == "2"


def test_a_batch_sent_twice_counts_once(env, queue):
    settings = Settings(urls=(env["AMQP_URL"],), queue=queue)
    lines = [
        format_event("emit_started", run="20261127T000000-aaaa", source="x", total=1),
        format_event("run_manifest", run="20261127T000000-aaaa", rows="1-1", total=1),
        format_event(
            "started",
            worker="w",
            task="20261127T000000-aaaa-1",
            row=1,
            run="20261127T000000-aaaa",
            attempt=1,
        ),
        format_event(
            "done",
            worker="w",
            task="20261127T000000-aaaa-1",
            row=1,
            run="20261127T000000-aaaa",
            seconds=0.1,
            attempt=1,
        ),
    ]
    conn, _url = rabbitmq.connect(settings)
    try:
        rabbitmq.declare_stream(conn, stream_name(queue), EventsConfig().arguments())
        pub = rabbitmq.StreamPublisher(conn, stream_name(queue))
        body = "\n".join(lines).encode()
        for _ in range(2):  # a republish after a lost confirm: the same id
            pub.publish(body, "w.1", KIND_EVENTS, {})
    finally:
        conn.close()
    got = read_stream(settings)
    assert (got.batches, got.duplicates, len(got.events)) == (1, 1, 4)
    rep = broker_report(env, "20261127T000000-aaaa")
    assert rep["audit"]["done_once"] == [1] and rep["audit"]["duplicates"] == []


def test_rows_a_killed_worker_finished_unsent_are_missing_from_the_stream_with_a_note(env, queue):
    """A worker killed with SIGKILL before its last batch went: the stream has its ready line
    and nothing after. Row 2, which it finished (its log has it), is missing from the report
    read from the broker, and the note names that worker and where the rest is."""
    settings = Settings(urls=(env["AMQP_URL"],), queue=queue)
    run_id = "20261127T000000-bbbb"

    def task_lines(worker: str, row: int) -> list[str]:
        ids = {"worker": worker, "task": f"{run_id}-{row}", "row": row, "run": run_id}
        return [
            format_event("started", **ids, attempt=1),
            format_event("done", **ids, seconds=0.0, attempt=1),
        ]

    def at(second: int, line: str) -> str:  # the time stamp a second into the run
        return f"ts=2026-11-27T00:00:{second:02d}.000Z " + line.split(" ", 1)[1]

    batches = [
        [
            at(0, format_event("emit_started", run=run_id, source="x", total=2)),
            at(0, format_event("run_manifest", run=run_id, rows="1-2", total=2)),
            at(1, format_event("emit_done", run=run_id, total=2)),
        ],
        [at(1, format_event("worker_ready", worker="calm", queue=queue))],
        [at(1, format_event("worker_ready", worker="killed", queue=queue))],
        [*(at(2, x) for x in task_lines("calm", 1))],
        [at(3, format_event("worker_stopped", worker="calm"))],
    ]
    declare_queue(env["AMQP_URL"], queue)  # where the queue is not, nothing can be missing
    conn, _url = rabbitmq.connect(settings)
    try:
        rabbitmq.declare_stream(conn, stream_name(queue), EventsConfig().arguments())
        pub = rabbitmq.StreamPublisher(conn, stream_name(queue))
        for n, lines in enumerate(batches):
            pub.publish("\n".join(lines).encode(), f"b.{n}", KIND_EVENTS, {})
    finally:
        conn.close()
    notes: list[str] = []
    rep = broker_report(env, run_id, notes=notes)
    assert rep["audit"]["missing"] == [2] and rep["audit"]["done_once"] == [1]
    assert "worker(s) killed end without worker_stopped" in notes[0], notes
    assert "calm" not in notes[0]


def test_a_stream_the_user_may_not_use_turns_events_off_and_the_task_goes_on(make_node, env):
    node = make_node()
    node.ctl("add_user", "limited", "secret-pw")
    queue = env["TASK_QUEUE"]
    ours = f"^{queue}(\\.dead)?$"  # not <queue>.events
    write = f"^({queue}(\\.dead)?|amq\\.default)$"  # publishing goes through amq.default
    node.ctl("set_permissions", "-p", "/", "limited", ours, write, ours)
    e = {**env, "AMQP_URL": f"amqp://limited:secret-pw@localhost:{node.port}/%2F"}
    r = run("emit", "--message", "One.", env=e)
    assert r.returncode == 0, r.stderr
    assert "note: events not sent to the broker" in r.stderr
    r = run("work", "--max-tasks", "1", "--seconds-per-dot", "0", "-q", env=e)
    assert r.returncode == 0, r.stderr
    assert "not sending events to the stream" in r.stderr and "Traceback" not in r.stderr
    worker_log = next(Path(env["TASK_LOG_DIR"]).glob("worker-*.log"))
    kinds = [x["event"] for x in events(worker_log)]
    assert "done" in kinds and kinds[-1] == "events_off"
