"""The fault suite: real emit and work processes, a real broker, and the end state checked
with `tasks report --json`: every task done, nothing missing, every duplicate explained.

Each scenario records its figures (tasks, missing, duplicates, recovery seconds) in
RESULTS; docs/RELIABILITY.md quotes them from a full run, which writes them to
RESULTS_FILE (bench/results/reliability.json, not tracked by git).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pytest

from tests.helpers import (
    BIN,
    RABBITMQ,
    RABBITMQ_VERSION,
    ROOT,
    Proc,
    broker_report,
    declare_like_the_tutorial,
    done_rows,
    drain,
    events,
    queue_ready,
    run,
    spawn,
    task_policy_of,
    wait_for,
    wait_for_event,
    wait_for_stream_event,
)
from utils.eventlog.format import parse_ts
from utils.rabbitmq import DELIVERY_LIMIT

pytestmark = pytest.mark.slow

RESULTS: dict[str, dict[str, object]] = {}
#: Where the figures go, one file per RabbitMQ version; RELIABILITY_RESULTS names another.
RESULTS_FILE = Path(
    os.environ.get(
        "RELIABILITY_RESULTS",
        ROOT
        / "bench"
        / "results"
        / ("reliability.json" if RABBITMQ == "3" else f"reliability-rabbitmq{RABBITMQ}.json"),
    )
)


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    if RESULTS:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        # Under xdist each worker adds the scenarios it ran: one at a time, whole files only.
        with open(RESULTS_FILE.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
            text = json.dumps({**old, **RESULTS}, indent=2, sort_keys=True) + "\n"
            fresh = RESULTS_FILE.with_suffix(f".{os.getpid()}.tmp")
            fresh.write_text(text)
            fresh.replace(RESULTS_FILE)


@dataclass
class Run:
    """One scenario's processes and folders."""

    env: dict[str, str]
    logs: Path
    tmp: Path
    workers: list[Proc] = field(default_factory=list)
    fault_at: float | None = None  # wall clock (epoch seconds) when the fault was injected

    def start_workers(self, n: int, *args: str) -> None:
        for _ in range(n):
            name = f"w{len(self.workers) + 1}"
            p = spawn(
                "work", "--name", name, "--quiet", *args, env=self.env, out=self.tmp / f"{name}.out"
            )
            self.workers.append(p)
            wait_for_event(self.logs / f"worker-{name}.log", "worker_ready", alive=p)

    def emit(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = run("emit", "--quiet", *args, env=self.env)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def fault(self, action: Callable[[], object]) -> None:
        """Inject a fault; recovery is counted from the moment it is over (a node back up)."""
        action()
        self.fault_at = time.time()

    def wait_done(self, rows: int, timeout: float = 180) -> None:
        want = set(range(1, rows + 1))
        if rows > 1000:
            # Reading big logs is costly: first wait (cheaply) for the queue to drain.
            url, queue = self.env["AMQP_URL"], self.env["TASK_QUEUE"]
            wait_for("the queue to drain", lambda: queue_ready(url, queue) == 0, timeout=timeout)
        wait_for(f"rows 1..{rows} done", lambda: done_rows(self.logs) >= want, timeout=timeout)

    def stop_workers(self) -> None:
        for p in self.workers:
            if p.popen.poll() is None:
                p.signal(signal.SIGTERM)
        for p in self.workers:
            p.wait(timeout=60)

    def report(self, run_id: str | None = None) -> dict[str, object]:
        extra = ["--run", run_id] if run_id else []
        r = run("tasks", "report", str(self.logs), "--json", *extra, env=self.env, timeout=300)
        doc = json.loads(r.stdout)
        return doc["runs"][-1]

    def recovery_seconds(self) -> float | None:
        """From the fault to the first task both started and done after it."""
        if self.fault_at is None:
            return None
        firsts = []
        for f in self.logs.glob("worker-*.log"):
            fresh: set[str] = set()
            for e in events(f):
                if parse_ts(e["ts"]).timestamp() <= self.fault_at:
                    continue
                if e["event"] == "started":
                    fresh.add(e.get("task", ""))
                elif e["event"] == "done" and e.get("task") in fresh:
                    firsts.append(parse_ts(e["ts"]).timestamp())
                    break
        return round(min(firsts) - self.fault_at, 2) if firsts else None


def check_and_record(
    name: str,
    r: Run,
    rows: int,
    dead: tuple[int, ...] = (),
    killed: Sequence[Proc] = (),
    **extra: object,
) -> dict[str, object]:
    """The common end-state check (every row done, or dead-lettered if it is in `dead`);
    returns the run's JSON report."""
    r.stop_workers()
    rep = r.report()
    audit = rep["audit"]
    assert audit["missing"] == [], audit
    assert audit["ok"] is True
    assert audit["emitted"] == rows
    assert audit["dead_lettered"] == list(dead), audit
    done = audit["done_once"] + [d["row"] for d in audit["duplicates"]]
    assert sorted(done + list(dead)) == list(range(1, rows + 1)), audit
    for dup in audit["duplicates"] + audit["redelivered"]:
        assert not dup["cause"].startswith("unknown"), dup
    # The event stream on the broker tells the same story as the logs, to the last field
    # (but for whereabouts: the broker's counts, asked at another moment). A worker killed
    # with SIGKILL may not have sent its last lines (docs/REPORT.md): where a scenario kills
    # one at once (`killed`), the stream is held to the audit's verdict, and a row it counts
    # missing must be one a killed worker's log has done, which the report's note explains.
    notes: list[str] = []
    theirs = broker_report(r.env, str(rep["run"]), notes=notes)
    if killed:
        for key in ("emitted", "dead_lettered"):
            assert theirs["audit"][key] == rep["audit"][key], key
        done_by_killed = {
            int(e["row"]) for p in killed for e in events(log_of(r, p)) if e["event"] == "done"
        }
        assert set(theirs["audit"]["missing"]) <= done_by_killed, (theirs["audit"], notes)
        if theirs["audit"]["missing"]:
            assert "end without worker_stopped (killed" in notes[0], notes
    else:
        assert {**theirs, "whereabouts": None} == {**rep, "whereabouts": None}
    RESULTS[name] = {
        "tasks": rows,
        "missing": len(audit["missing"]),
        "duplicates": len(audit["duplicates"]),
        "redelivered": len(audit["redelivered"]),
        "recovery_seconds": r.recovery_seconds(),
        **({"dead_lettered": len(dead)} if dead else {}),
        **extra,
    }
    return rep


@pytest.fixture
def scenario(env: dict[str, str], logs: Path, tmp_path: Path) -> Run:
    return Run(env, logs, tmp_path)


def on_node(scenario: Run, node: object) -> Run:
    scenario.env = {**scenario.env, "AMQP_URL": node.url}  # type: ignore[attr-defined]
    return scenario


def tasks_file(tmp: Path, rows: int, dots: int = 1) -> str:
    path = tmp / "tasks.csv"
    path.write_text("".join(f"Task {n} {'.' * dots}\n" for n in range(1, rows + 1)))
    return str(path)


def log_of(r: Run, p: Proc) -> Path:
    return r.logs / f"worker-{p.out.stem}.log"


def busy_worker(r: Run, seconds_left: float = 0.0, per_dot: float = 0.0) -> Proc:
    """A running worker in the middle of a task right now; with per_dot (the workers'
    --seconds-per-dot), one whose task has at least seconds_left to go."""

    def mid_task() -> Proc | None:
        for p in r.workers:
            if p.popen.poll() is not None:
                continue
            evs = events(log_of(r, p))
            kinds = [e["event"] for e in evs]
            if kinds.count("started") > kinds.count("done") + kinds.count("failed"):
                last = [e for e in evs if e["event"] == "started"][-1]
                ends = parse_ts(last["ts"]).timestamp() + int(last.get("dots", "0")) * per_dot
                if not per_dot or ends - time.time() >= seconds_left:
                    return p
        return None

    return wait_for("a worker mid-task", mid_task)  # type: ignore[return-value]


def kill_mid_task_known_to_the_broker(r: Run) -> None:
    """SIGKILL a worker mid-task once its task's `started` is in the event stream too.

    The line reaches the broker moments after the log (utils/eventlog/stream.py); a worker killed
    within them has it in its log only, and the broker-side report could not say who
    held the task.
    """

    def killed() -> bool:
        victim = busy_worker(r)
        last = [e for e in events(log_of(r, victim)) if e["event"] == "started"][-1]
        wait_for_stream_event(r.env, "started", task=last["task"], worker=last["worker"])
        ends = [e for e in events(log_of(r, victim)) if e.get("task") == last["task"]]
        if ends[-1]["event"] != "started":
            return False  # it finished meanwhile: pick again
        victim.kill()
        return True

    wait_for("a worker killed mid-task", killed)


# 1 -------------------------------------------------------------------------------------------
def test_1_a_worker_killed_with_sigkill_mid_task_loses_nothing(scenario):
    r = scenario
    r.start_workers(3, "--seconds-per-dot", "0.05")
    r.emit("tasks.csv")
    r.fault(lambda: kill_mid_task_known_to_the_broker(r))
    r.wait_done(20)
    rep = check_and_record("1 worker SIGKILL mid-task", r, 20)
    assert rep["audit"]["redelivered"] or rep["audit"]["duplicates"]


# 2 -------------------------------------------------------------------------------------------
def test_2_warm_stop_finishes_its_task_and_cold_stop_gives_it_back(scenario):
    r = scenario
    r.start_workers(3, "--seconds-per-dot", "0.2")
    r.emit("tasks.csv")
    warm = busy_worker(r)
    r.fault(lambda: warm.signal(signal.SIGTERM))
    assert warm.wait() == 0, warm.output()
    # Ctrl+C twice, as a person does, while the worker has a second or more of its task to
    # go, so that the second comes before the task ends. It comes once the first is seen:
    # signals sent back to back can merge into one.
    cold = busy_worker(r, seconds_left=1.0, per_dot=0.2)
    cold.signal(signal.SIGINT)
    wait_for_event(log_of(r, cold), "shutdown_warm")
    cold.signal(signal.SIGINT)
    assert cold.wait() == 130, cold.output()
    r.wait_done(20)
    rep = check_and_record("2 warm stop (SIGTERM) and cold stop (double SIGINT)", r, 20)
    assert any(
        "cold stop" in d["cause"] for d in rep["audit"]["redelivered"] + rep["audit"]["duplicates"]
    )


# 3 -------------------------------------------------------------------------------------------
def test_3_a_broker_restart_mid_emit_puts_every_row_in_the_queue(make_node, scenario):
    node = make_node()
    r = on_node(scenario, node)
    out = (r.tmp / "emit.out").open("wb")
    emit = subprocess.Popen(
        [str(BIN / "emit"), "-", "--quiet"],
        env=r.env,
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    assert emit.stdin is not None
    rows = [f"Task {n} ." for n in range(1, 1001)]
    emit.stdin.write("".join(f"{x}\n" for x in rows[:500]).encode())
    emit.stdin.flush()
    queue = r.env["TASK_QUEUE"]
    wait_for("500 rows in the queue", lambda: queue_ready(node.url, queue) >= 500)
    r.fault(lambda: (node.stop(), node.start()))
    emit.stdin.write("".join(f"{x}\n" for x in rows[500:]).encode())
    emit.stdin.close()
    assert emit.wait(timeout=120) == 0, (r.tmp / "emit.out").read_text()
    assert queue_ready(node.url, queue) >= 1000
    r.start_workers(3, "--seconds-per-dot", "0")
    r.wait_done(1000)
    check_and_record("3 broker restart mid-emit", r, 1000)


# 4, 5 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["restart", "sigkill"])
def test_4_5_the_broker_restarted_or_killed_mid_work_loses_nothing(make_node, scenario, how):
    node = make_node()
    r = on_node(scenario, node)
    r.start_workers(3, "--seconds-per-dot", "0.01")
    r.emit(tasks_file(r.tmp, 300, dots=2))
    wait_for("50 tasks done", lambda: len(done_rows(r.logs)) >= 50)
    r.fault(lambda: (node.stop() if how == "restart" else node.kill(), node.start()))
    r.wait_done(300)
    name = "4 broker restart mid-work" if how == "restart" else "5 broker SIGKILL mid-work"
    check_and_record(name, r, 300)
    lost = [
        e for f in r.logs.glob("worker-*.log") for e in events(f) if e["event"] == "connection_lost"
    ]
    assert len(lost) >= 3  # every worker saw it, and came back


# 6 -------------------------------------------------------------------------------------------
def test_6_a_task_three_times_the_heartbeat_timeout_runs_once(scenario):
    r = scenario
    r.start_workers(1, "--heartbeat", "1", "--seconds-per-dot", "1")
    r.emit("--message", "Task 1 ......")
    r.wait_done(1)
    rep = check_and_record("6 task 3x the heartbeat timeout", r, 1)
    assert rep["audit"]["duplicates"] == [] and rep["audit"]["redelivered"] == []


# 7 -------------------------------------------------------------------------------------------
#: A node whose consumer_timeout is 3 s, checked every second (the channel's tick; 60 s by
#: default, so the close comes up to a minute late).
SHORT_CONSUMER_TIMEOUT = {
    "extra_conf": "consumer_timeout = 3000",
    "advanced_conf": "[{rabbit, [{channel_tick_interval, 1000}]}].",
}


def test_7_a_task_longer_than_consumer_timeout_is_stopped_said_and_dead_lettered_not_looped(
    make_node, scenario
):
    node = make_node(**SHORT_CONSUMER_TIMEOUT)
    r = on_node(scenario, node)

    def row_3() -> list[dict[str, str]]:
        return sorted(
            (e for p in r.workers for e in events(log_of(r, p)) if e.get("row") == "3"),
            key=lambda e: e["ts"],
        )

    r.start_workers(2, "--seconds-per-dot", "1")
    # Row 3 takes 60 s (room for a loaded machine to notice the timeout mid-task); the
    # others 1 s, well within the broker's 3 s.
    rows = [f"Task {n} {'.' * (60 if n == 3 else 1)}" for n in range(1, 11)]
    (r.tmp / "t.csv").write_text("".join(f"{x}\n" for x in rows))
    r.emit(str(r.tmp / "t.csv"))
    dead = wait_for(
        "row 3 dead-lettered",
        lambda: [
            e
            for p in r.workers
            for e in events(log_of(r, p))
            if e["event"] == "dead_lettered" and e["row"] == "3"
        ],
        timeout=300,
        detail=lambda: "\n".join(str(e) for e in row_3()),
    )
    wait_for("rows 1..10 but 3 done", lambda: done_rows(r.logs) >= set(range(1, 11)) - {3})

    # The worker that lost attempt 3 logs stopping it while the other may already have
    # dead-lettered delivery 4: wait for its line.
    evs: list[dict[str, str]] = wait_for(  # type: ignore[assignment]
        "3 attempts of row 3 stopped",
        lambda: (got := row_3()) and sum(e["event"] == "requeued" for e in got) >= 3 and got,
    )
    # Each attempt: started, then -- while the task still runs (it would take 60 s) -- the
    # broker's words naming consumer_timeout, then the worker stops it; 3 attempts, no more.
    # RabbitMQ 3.10 and 4.0 close the channel, naming the timeout; 4.3 cancels the consumer
    # (basic.cancel, the channel left open), which names nothing: the worker tells it from a
    # deleted queue, and says how long the task had run.
    said = [e for e in evs if e["event"] == "connection_lost"]
    assert len(said) == 3, evs
    for e in said:
        if RABBITMQ_VERSION >= (4, 3):
            assert re.fullmatch(
                r"the broker's consumer_timeout ran out after [3-9] s: it has given this task "
                r"back to the queue",
                e["reason"],
            ), e
        else:
            assert e["reason"] == (
                "the broker's consumer_timeout (3 s) ran out: it has given this task back to "
                "the queue"
            )
    started = [e for e in evs if e["event"] == "started"]
    stopped = [e for e in evs if e["event"] == "requeued"]
    assert [e["attempt"] for e in started] == ["1", "2", "3"]
    assert [e["reason"] for e in stopped] == ["consumer_timeout"] * 3
    noticed = [
        (parse_ts(lost["ts"]) - parse_ts(start["ts"])).total_seconds()
        for start, lost in zip(started, said, strict=True)
    ]
    assert all(3 <= n < 60 for n in noticed), noticed  # mid-task, not at its end
    assert dead[0]["reason"].endswith("on attempt 3; attempt 4 would be past --max-attempts 3")  # type: ignore[index]
    [(_m, props, body)] = drain(node.url, f"{r.env['TASK_QUEUE']}.dead")
    assert body == rows[2].encode() and "x-failure-reason" in props.headers
    rep = check_and_record(
        "7 consumer_timeout shorter than a task",
        r,
        10,
        dead=(3,),
        noticed_after_seconds=[round(n, 1) for n in noticed],
    )
    [again] = [d for d in rep["audit"]["redelivered"] if d["row"] == 3]
    assert "consumer_timeout" in again["cause"]


def test_7_a_classic_queue_under_consumer_timeout_per_version(make_node, scenario):
    """As 7, on a classic queue, one worker, an 8 s task. 3.10 and 4.0 time classic queues
    out too: the worker counts each lost attempt itself (a confirmed copy, x-attempt + 1)
    and dead-letters the task after 3. 4.3 enforces no consumer timeout on a classic queue,
    by design: the task simply runs to its end, once."""
    node = make_node(**SHORT_CONSUMER_TIMEOUT)
    r = on_node(scenario, node)
    r.env = {**r.env, "TASK_QUEUE_TYPE": "classic"}
    r.start_workers(1, "--seconds-per-dot", "1")
    r.emit("--message", "Task 1 ........")
    log = log_of(r, r.workers[0])
    if RABBITMQ_VERSION >= (4, 3):
        r.wait_done(1)
        assert "connection_lost" not in [e["event"] for e in events(log)]
        check_and_record("7d classic queue, a task longer than consumer_timeout", r, 1)
        return
    [dead] = wait_for_event(log, "dead_lettered")
    assert dead["reason"].endswith("on attempt 3; attempt 4 would be past --max-attempts 3")
    stopped = [e for e in events(log) if e["event"] == "requeued"]
    assert [e["reason"] for e in stopped] == ["consumer_timeout"] * 3
    check_and_record("7d classic queue, a task longer than consumer_timeout", r, 1, dead=(1,))


def test_7_consumer_timeout_raised_for_a_queue_we_create_where_the_broker_lets_us(
    make_node, scenario
):
    """work --consumer-timeout 20 creating the queue, a 6 s task, a node timeout of 3 s.
    4.0 (3.12 to 4.2): the queue it creates gets x-consumer-timeout. 4.3: the worker's own
    consumer asks for it (x-consumer-timeout on basic.consume). Either way the task goes
    through. 3.10 has no per-queue timeout: the worker says so, with what to do instead,
    and the node's 3 s stands. The node has the management API, so the queue is created as
    users get it: our policy carries the dead-letter settings and (4.0, 4.3) the timeout."""
    node = make_node(**SHORT_CONSUMER_TIMEOUT, management=True)
    r = on_node(scenario, node)
    r.start_workers(1, "--seconds-per-dot", "1", "--consumer-timeout", "20")
    r.emit("--message", "Task 1 ......")
    log = log_of(r, r.workers[0])
    policy = task_policy_of(node.url, r.env["TASK_QUEUE"])
    assert policy is not None
    assert policy["definition"].get("consumer-timeout") == (
        20000 if RABBITMQ_VERSION >= (4,) else None
    )
    if RABBITMQ_VERSION >= (4,):
        r.wait_done(1)
        kinds = [e["event"] for e in events(log)]
        assert "queue_warning" not in kinds and "connection_lost" not in kinds
        check_and_record("7b --consumer-timeout 20 on a 3 s node", r, 1)
    else:
        [warned] = wait_for_event(log, "queue_warning")
        assert "has no per-queue consumer timeout" in warned["note"]
        assert "consumer_timeout = 20000 in rabbitmq.conf" in warned["note"]
        lost = wait_for_event(log, "connection_lost")
        assert "consumer_timeout (3 s)" in lost[0]["reason"]
        RESULTS["7b --consumer-timeout 20 on a 3 s node"] = {
            "tasks": 1,
            "note": "RabbitMQ 3.10 ignores x-consumer-timeout; the node's 3 s closed the channel",
        }


def test_7_consumer_timeout_for_a_queue_someone_else_made(make_node, scenario):
    """As 7b, on a quorum queue the RabbitMQ tutorial's own declaration made before any of
    ours ran. 4.3: the worker's consumer argument outranks the queue and the node, so the
    6 s task goes through. 4.0: only a policy can give an existing queue a timeout, and the
    worker says so at start, with the one command (and the node's 3 s stands). 3.10: no
    per-queue timeout at all, as in 7b."""
    node = make_node(**SHORT_CONSUMER_TIMEOUT)
    r = on_node(scenario, node)
    declare_like_the_tutorial(node.url, r.env["TASK_QUEUE"])
    r.start_workers(1, "--seconds-per-dot", "1", "--consumer-timeout", "20")
    r.emit("--message", "Task 1 ......")
    log = log_of(r, r.workers[0])
    if RABBITMQ_VERSION >= (4, 3):
        r.wait_done(1)
        kinds = [e["event"] for e in events(log)]
        assert "connection_lost" not in kinds
        # The one line at start is the queue's missing dead-letter target (the tutorial
        # made it; this node has no management API to check a policy), not the timeout.
        warnings = [e["note"] for e in events(log) if e["event"] == "queue_warning"]
        assert all("consumer timeout" not in n for n in warnings), warnings
        check_and_record("7c --consumer-timeout 20, a queue the tutorial made", r, 1)
        return
    warned = [e["note"] for e in wait_for_event(log, "queue_warning")]
    if RABBITMQ_VERSION >= (4,):
        assert any(
            "a consumer timeout that --consumer-timeout cannot change" in n
            and '"consumer-timeout":20000' in n
            for n in warned
        ), warned
    else:
        assert any("has no per-queue consumer timeout" in n for n in warned), warned
    lost = wait_for_event(log, "connection_lost")
    assert "consumer_timeout (3 s)" in lost[0]["reason"]
    RESULTS["7c --consumer-timeout 20, a queue the tutorial made"] = {
        "tasks": 1,
        "note": "the worker named the policy command (4.0) or the node setting (3.10); the "
        "node's 3 s closed the channel",
    }


# 8 -------------------------------------------------------------------------------------------
def test_8_a_memory_alarm_blocks_the_emitter_which_waits_it_out(make_node, scenario):
    node = make_node(extra_conf="vm_memory_high_watermark.absolute = 1")
    r = on_node(scenario, node)
    r.start_workers(2, "--seconds-per-dot", "0")
    out = r.tmp / "emit.out"
    with out.open("wb") as f:
        emit = subprocess.Popen(
            [str(BIN / "emit"), tasks_file(r.tmp, 50)],
            env=r.env,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    wait_for_event(r.logs / "emitter.log", "blocked")
    r.fault(lambda: node.ctl("set_vm_memory_high_watermark", "0.4"))
    assert emit.wait(timeout=120) == 0, out.read_text()
    assert "blocking" in out.read_text()
    r.wait_done(50)
    check_and_record("8 memory alarm blocks publishers", r, 50)


# 9 -------------------------------------------------------------------------------------------
def test_9_a_queue_deleted_mid_run_is_reported_not_silently_lost(scenario, broker_url, queue):
    r = scenario
    r.start_workers(2, "--seconds-per-dot", "0.05")
    out = r.tmp / "emit.out"
    with out.open("wb") as f:
        emit = subprocess.Popen(
            [str(BIN / "emit"), "-"],
            env=r.env,
            stdin=subprocess.PIPE,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    assert emit.stdin is not None
    emit.stdin.write("".join(f"Task {n} .\n" for n in range(1, 101)).encode())
    emit.stdin.flush()
    wait_for("10 tasks done", lambda: len(done_rows(r.logs)) >= 10)
    # The workers are paused while the queue is gone and emit publishes: a worker that
    # declared the queue again first would make the rows routable, and the test a race.
    for p in r.workers:
        p.signal(signal.SIGSTOP)
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    deleted = conn.channel().queue_delete(queue).method.message_count
    conn.close()
    emit.stdin.write("".join(f"Task {n} .\n" for n in range(101, 201)).encode())
    emit.stdin.close()
    code = emit.wait(timeout=120)
    for p in r.workers:
        p.signal(signal.SIGCONT)
    r.fault_at = time.time()  # recovery counts from when the workers run again
    text = out.read_text()
    ends = [e for e in events(r.logs / "emitter.log") if e["event"] in ("emit_done", "emit_failed")]
    unroutable = int(ends[-1].get("unroutable", "0"))
    # Rows published while the queue was gone (101..200 at least) are named; emit exits 3.
    assert code == 3 and "could not be routed" in text, text
    assert unroutable >= 100, text
    run_id = ends[-1]["run"]
    # The workers noticed, said so, declared the queue again, and take new work.
    for p in r.workers:
        wait_for_event(log_of(r, p), "reconnected", alive=p)
    assert run("emit", "--message", "after the deletion .", env=r.env).returncode == 0
    wait_for(
        "the new task done",
        lambda: any(
            e["event"] == "done" and e.get("run") != run_id
            for p in r.workers
            for e in events(log_of(r, p))
        ),
    )
    r.stop_workers()
    rep = r.report(run_id)
    missing = rep["audit"]["missing"]
    # Nothing vanished unexplained: a missing row was deleted with the queue (the user's
    # own act), or emit reported it as unroutable.
    assert len(missing) <= deleted + unroutable, (missing, deleted, unroutable)
    RESULTS["9 queue deleted mid-run"] = {
        "tasks": 200,
        "deleted_with_queue": deleted,
        "unroutable_reported": unroutable,
        "missing": len(missing),
        "emit_exit": code,
        "recovery_seconds": r.recovery_seconds(),
    }


# 10 ------------------------------------------------------------------------------------------
def test_10_all_connections_closed_by_the_broker_loses_nothing(make_node, scenario):
    node = make_node()
    r = on_node(scenario, node)
    r.start_workers(3, "--seconds-per-dot", "0.01")
    r.emit(tasks_file(r.tmp, 200, dots=2))
    wait_for("30 tasks done", lambda: len(done_rows(r.logs)) >= 30)
    r.fault(lambda: node.ctl("close_all_connections", "reliability test"))
    r.wait_done(200)
    check_and_record("10 close_all_connections", r, 200)


# 11 ------------------------------------------------------------------------------------------
def test_11_volume_100000_tasks_through_3_workers(scenario):
    r = scenario
    r.start_workers(3, "--seconds-per-dot", "0")
    started = time.time()
    r.emit(tasks_file(r.tmp, 100_000, dots=0))
    r.wait_done(100_000, timeout=600)
    rep = check_and_record(
        "11 volume: 100,000 tasks, 3 workers", r, 100_000, seconds=round(time.time() - started, 1)
    )
    # Duplicates only where the broker redelivered.
    for d in rep["audit"]["duplicates"]:
        assert "redeliver" in d["cause"] or "ack" in d["cause"], d


# 12 ------------------------------------------------------------------------------------------
#: A task command that SIGKILLs its own worker when the body says "crash" (its shell's
#: parent is the worker), and does nothing otherwise.
KILL_MY_WORKER = 'case "$TASK_BODY" in *crash*) kill -9 $PPID; sleep 5;; esac'


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_12_a_task_that_kills_its_worker_every_time_is_dead_lettered_after_max_attempts(
    scenario, queue_type
):
    r = scenario
    r.env = {**r.env, "TASK_QUEUE_TYPE": queue_type}
    args = ("--shell", "--exec", KILL_MY_WORKER, "--max-attempts", "3")
    rows = [f"Task {n}{' crash' if n == 7 else ''}" for n in range(1, 21)]
    (r.tmp / "t.csv").write_text("".join(f"{x}\n" for x in rows))
    r.start_workers(2, *args)
    r.emit(str(r.tmp / "t.csv"))
    killed = []

    def supervise() -> bool:
        """Restart each killed worker, as systemd's Restart=always would; done once row 7
        is dead-lettered and the rest done."""
        for p in list(r.workers):
            if p.popen.poll() == -signal.SIGKILL and p not in killed:
                killed.append(p)
                r.start_workers(1, *args)
        dead = any(
            e["event"] == "dead_lettered" and e["row"] == "7"
            for p in r.workers
            for e in events(log_of(r, p))
        )
        return dead and done_rows(r.logs) >= set(range(1, 21)) - {7}

    wait_for("row 7 dead-lettered and the rest done", supervise, timeout=120)
    killed = [p for p in r.workers if p.popen.poll() == -signal.SIGKILL]
    assert len(killed) == 3  # one worker per attempt, and no more
    r.workers = [p for p in r.workers if p not in killed]
    [(_m, props, body)] = drain(r.env["AMQP_URL"], f"{r.env['TASK_QUEUE']}.dead")
    assert body == b"Task 7 crash"
    assert props.headers["x-failure-reason"] == (
        "lost its worker (crash, kill, lost connection or given back) on attempt 3; "
        "attempt 4 would be past --max-attempts 3"
    )
    rep = check_and_record(
        f"12 a task that SIGKILLs its worker every time ({queue_type})",
        r,
        20,
        dead=(7,),
        killed=killed,
        workers_killed=len(killed),
    )
    [t] = [t for t in rep["tasks"] if t["row"] == 7]
    assert t["dead_lettered"] and t["attempts"] == 3 and t["times_done"] == 0


# 13 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["reject", "nack"])
def test_13_a_foreign_consumer_that_keeps_rejecting_a_task_leaves_it_in_the_dead_queue(
    scenario, broker_version, how
):
    """Another client on our quorum queue gives one of our tasks back (requeue), up to 30
    times. A reject is a failed delivery on every version: the broker gives up at the
    queue's delivery limit and dead-letters it to <queue>.dead, with its reason; nothing is
    dropped (RabbitMQ 4 would drop it with no dead-letter target). A nack counts the same
    on 3.10 and 4.0; from 4.3 it is a plain return that the limit never sees, by design
    ("unlimited explicit returns"): the task stays in the queue, not lost, and our worker,
    which counts every return (x-acquired-count), dead-letters it once it is past
    --max-attempts. `tasks dead --requeue` then gives it back to our workers."""
    r = scenario
    url, queue = r.env["AMQP_URL"], r.env["TASK_QUEUE"]
    r.emit("--message", "Task 1 .", "--message", "Task 2 .")
    conn = pika.BlockingConnection(pika.URLParameters(url))
    returns = 0
    try:
        ch = conn.channel()
        misses = 0
        while returns < 30 and misses < 20:  # up to 30 returns, or until the broker keeps it
            method, props, _ = ch.basic_get(queue)
            if method is None:
                misses += 1
                conn.sleep(0.05)
                continue
            misses = 0
            if props.headers.get("source-row") == 2:
                continue  # held unacked: the broker gives it back when we close
            returns += 1
            if how == "reject":
                ch.basic_reject(method.delivery_tag, requeue=True)
            else:
                ch.basic_nack(method.delivery_tag, requeue=True)
    finally:
        conn.close()
    limitless = how == "nack" and broker_version >= (4, 3)
    if limitless:
        assert returns == 30  # never taken away by the broker
        wait_for("rows 1 and 2 back in the queue", lambda: queue_ready(url, queue) == 2)
        # Waiting there is not missing.
        waiting = run("tasks", "report", str(r.logs), "--json", env=r.env)
        assert waiting.returncode == 0, waiting.stdout + waiting.stderr
        r.start_workers(1, "--seconds-per-dot", "0")
        [dead] = wait_for_event(log_of(r, r.workers[0]), "dead_lettered")
        assert dead["row"] == "1"
        assert dead["reason"].endswith("attempt 31 would be past --max-attempts 3"), dead
    else:
        assert returns == DELIVERY_LIMIT + 1 < 30
        wait_for("row 2 back in the queue", lambda: queue_ready(url, queue) == 1)
    listed = run("tasks", "dead", env=r.env)
    assert listed.returncode == 0, listed.stderr
    assert "row 1 " in listed.stdout
    if not limitless:
        assert f"the broker dead-lettered it from {queue}: delivery_limit" in listed.stdout
    back = run("tasks", "dead", "--requeue", env=r.env)
    assert back.returncode == 0 and "moved 1 dead letter back" in back.stdout, back.stderr
    if not r.workers:
        r.start_workers(1, "--seconds-per-dot", "0")
    r.wait_done(2)
    name = f"13 a foreign consumer {'rejects' if how == 'reject' else 'nacks'} a task 30 times"
    if not limitless:
        check_and_record(name, r, 2, broker_deliveries=returns)
        return
    # Our worker dead-lettered it, then did it once requeued: the report says both.
    r.stop_workers()
    audit = r.report()["audit"]
    assert (audit["missing"], audit["done_once"], audit["dead_lettered"]) == ([], [1, 2], [1])
    RESULTS[name] = {"tasks": 2, "missing": 0, "duplicates": 0, "broker_deliveries": returns}
