"""A 3-node RabbitMQ cluster on loopback: emitter and workers survive the loss of a node."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.analysis import summarise_run
from inspector.runs import latest_run, read_logs
from tests.helpers import (
    CLUSTER_PORT,
    ROOT,
    Proc,
    StdinEmit,
    broker_script,
    events,
    spawn,
    wait_for,
    wait_for_event,
)

pytestmark = pytest.mark.slow

PORTS = [CLUSTER_PORT + i for i in range(3)]
URLS = ",".join(f"amqp://guest:guest@localhost:{p}/%2F" for p in PORTS)


def broker(*args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    # The nodes keep the management plugin: `tasks status` asks it for the queue's leader.
    env = {"CLUSTER_PORT": str(CLUSTER_PORT)}
    if port is not None:
        env["BROKER_PORT"] = str(port)
    return broker_script(*args, **env)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    up = broker("cluster-up", "3")
    if up.returncode != 0:
        broker("cluster-down")  # the nodes that did start
        pytest.fail(f"the test cluster did not form:\n{up.stdout}{up.stderr}", pytrace=False)
    yield URLS
    broker("cluster-down")


def queue_info(queue: str) -> dict[str, object]:
    for port in PORTS:
        r = broker(
            "ctl",
            "list_queues",
            "name",
            "leader",
            "members",
            "online",
            "--formatter",
            "json",
            port=port,
        )
        if r.returncode == 0:
            for q in json.loads(r.stdout):
                if q["name"] == queue:
                    return q
    raise AssertionError(f"no node knows queue {queue}")


def port_of(node: str) -> int:
    return int(node.split("@")[0].removeprefix("mc"))


def done_count(logs: Path) -> int:
    return sum(1 for f in logs.glob("worker-*.log") for e in events(f) if e["event"] == "done")


def all_done(logs: Path, n: int, workers: list[Proc], lost: int, timeout: float) -> None:
    """Wait until n tasks are done (a bound, not a timing); if they never are, fail with
    the queues as a surviving node sees them, each worker's last lines, and its stacks."""
    try:
        wait_for(f"all {n} tasks done", lambda: done_count(logs) >= n, timeout=timeout)
    except AssertionError:
        r = broker(
            "ctl",
            "list_queues",
            "name",
            "leader",
            "online",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            port=PORTS[(PORTS.index(lost) + 1) % 3],
        )
        tails = "\n".join(
            f"{f.name}: ...{f.read_text()[-1500:]}" for f in sorted(logs.glob("worker-*.log"))
        )
        outs = "\n".join(w.where() for w in workers)
        raise AssertionError(
            f"{done_count(logs)} done; lost {lost}; queues: {r.stdout}{r.stderr}\n{tails}\n{outs}"
        ) from None


def three_workers(
    urls: str, queue: str, logs: Path, tmp_path: Path, prefix: str, per_dot: str
) -> tuple[dict[str, str], list[Proc]]:
    """The environment for the cluster's queue, and 3 workers on it, each ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "AMQP_"))}
    env.update(AMQP_URL=urls, TASK_QUEUE=queue, TASK_LOG_DIR=str(logs), PYTHONUNBUFFERED="1")
    workers = []
    for i in range(3):
        name = f"{prefix}{i}"
        w = spawn(
            "work",
            "--name",
            name,
            "--seconds-per-dot",
            per_dot,
            "--quiet",
            env=env,
            out=tmp_path / f"{name}.out",
        )
        wait_for_event(logs / f"worker-{name}.log", "worker_ready", alive=w)
        workers.append(w)
    return env, workers


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_losing_the_leader_node_mid_run_loses_no_task(cluster, how, tmp_path, logs):
    queue = f"cluster-{how}"
    env, workers = three_workers(cluster, queue, logs, tmp_path, "c", "0.002")
    # The emitter reads its rows from a pipe we feed, so it is mid-run when the node goes.
    emitter = StdinEmit("--quiet", env=env, out=tmp_path / "emit.out")
    rows = [f"Task {n} ." for n in range(1, 2001)]
    emitter.feed(rows[:1000])
    wait_for("300 tasks done", lambda: done_count(logs) >= 300)

    leader = str(queue_info(queue)["leader"])
    lost = port_of(leader)
    stopper = threading.Thread(target=broker, args=(how,), kwargs={"port": lost})
    stopper.start()
    emitter.feed(rows[1000:])
    emitter.close_input()
    stopper.join()
    assert emitter.wait(timeout=180) == 0, emitter.output()

    all_done(logs, 2000, workers, lost, timeout=240)
    for w in workers:
        w.signal(15)
    for w in workers:
        assert w.wait() == 0, w.output()
    summary = summarise_run(latest_run(read_logs(logs)))
    assert summary.audit.missing == []
    assert len(summary.audit.once) + len(summary.audit.duplicates) == 2000
    # Anyone who was on the lost node moved to a survivor, and said so.
    moved = [e for f in logs.glob("worker-*.log") for e in events(f) if e["event"] == "reconnected"]
    assert all(port_of_node(e["node"]) != lost for e in moved)

    # tasks status names the node that is down and the members that are offline.
    status = cluster_status(env)
    assert {n["node"]: n["up"] for n in status["nodes"]} == {
        f"localhost:{p}": p != lost for p in PORTS
    }
    # The management API refreshes its view every few seconds: wait for it to catch up.
    status = wait_for(
        "status to show the lost member offline",
        lambda: (
            (st := cluster_status(env))["online"] is not None
            and f"mc{lost}@localhost" not in st["online"]
            and st
        ),
    )
    assert status["leader"] != f"mc{lost}@localhost"

    # The node comes back, rejoins, and the queue has all its members online again.
    assert broker("start", port=lost).returncode == 0
    wait_for("all 3 members online", lambda: len(queue_info(queue)["online"]) == 3, timeout=120)
    status = wait_for(
        "status to show all 3 members online",
        lambda: len((st := cluster_status(env))["online"] or []) == 3 and st,
    )
    assert all(n["up"] for n in status["nodes"])


def cluster_status(env: dict[str, str]) -> dict[str, object]:
    r = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "tasks"), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["cluster"]


def port_of_node(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def test_the_event_stream_survives_losing_a_node_and_the_report_still_reads_it(
    cluster, tmp_path, logs
):
    queue = "cluster-events"
    env, workers = three_workers(cluster, queue, logs, tmp_path, "e", "0.005")
    csv = tmp_path / "rows.csv"
    csv.write_text("".join(f"Task {n} .\n" for n in range(1, 601)))
    emitted = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "emit"), str(csv), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert emitted.returncode == 0, emitted.stderr
    run_id = emitted.stdout.strip().rsplit(" ", 1)[1]
    # Replicated as the work queue is: a member on every node.
    stream = queue_info(f"{queue}.events")
    assert len(stream["members"]) == 3, stream
    wait_for("200 tasks done", lambda: done_count(logs) >= 200)

    # The node that leads the stream goes, mid-run.
    lost = port_of(str(stream["leader"]))
    assert broker("stop", port=lost).returncode == 0
    all_done(logs, 600, workers, lost, timeout=240)
    for w in workers:
        w.signal(15)
    for w in workers:
        assert w.wait() == 0, w.output()

    # The broker-side report, read from the surviving nodes, tells what the logs tell.
    ours = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "tasks"), "report", "--run", run_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    theirs = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "tasks"),
            "report",
            "--source",
            "broker",
            "--run",
            run_id,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert theirs.returncode == 0, theirs.stderr
    logs_run = json.loads(ours.stdout)["runs"][0]
    broker_run = json.loads(theirs.stdout)["runs"][0]
    assert broker_run["audit"]["missing"] == [] and broker_run["audit"]["emitted"] == 600
    # The same run from both sources, but for whereabouts: the broker's counts, asked at
    # another moment (the management API's view of a cluster lags by seconds).
    assert {**broker_run, "whereabouts": None} == {**logs_run, "whereabouts": None}

    assert broker("start", port=lost).returncode == 0  # for the tests after this one
