"""Total throughput of `work` processes against their number, on one node and on a cluster.

    python -m bench.scaling [--workers 1 2 4 8] [--tasks 6000] [--reps 3]

Start the two brokers first (the ports are this script's defaults):

    BROKER_PORT=5750 scripts/broker start
    CLUSTER_PORT=5851 scripts/broker cluster-up 3

Each run fills a fresh quorum queue with zero-dot tasks (confirmed, by `emit`), starts N
`work --prefetch 1` processes, and takes the rate while every worker was busy, as `make
bench` does. On the cluster the workers get all the nodes' URLs and pick one at random.
Repetitions are interleaved (every setup and count once, then again), so the machine's
noise hits all of them alike. Writes bench/results/scaling.json and the table in
docs/SCALING.md between its `scaling:begin` and `scaling:end` markers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    ROOT,
    Admin,
    Workers,
    broker_pid,
    cpu_seconds,
    machine,
    run_timed,
    say,
    steady_rate,
    write,
)
from bench.stats import fmt_ratio, fmt_spread, rate, ratios, spread

RESULTS = ROOT / "bench" / "results" / "scaling.json"
DOC = ROOT / "docs" / "SCALING.md"
BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"


def node_url(port: int) -> str:
    """The guest URL of one of our local nodes."""
    return f"amqp://guest:guest@localhost:{port}/%2F"


def cluster_urls(first_port: int, nodes: int) -> str:
    """AMQP_URL for a local cluster: every node's URL, comma-separated."""
    return ",".join(node_url(first_port + i) for i in range(nodes))


def summarise_scaling(runs: dict[str, dict[int, list[dict[str, float]]]]) -> dict[str, Any]:
    """Medians and ranges per setup and worker count, with ratios to one worker on the same
    setup and, for the cluster, to the single node, repetition by repetition."""
    out: dict[str, Any] = {}
    for setup, by_count in runs.items():
        one = [r["rate"] for r in by_count[min(by_count)]]
        out[setup] = {}
        for n, rs in sorted(by_count.items()):
            rates = [r["rate"] for r in rs]
            e: dict[str, Any] = {
                "rate": spread(rates),
                "vs_one_worker": ratios(rates, one),
                "broker_cpu": spread([r["broker_cpu"] for r in rs]),
                "workers_cpu": spread([r["workers_cpu"] for r in rs]),
                "counted": [int(r["counted"]) for r in rs],
            }
            single = runs.get("single", {}).get(n)
            if setup != "single" and single and len(single) == len(rs):
                e["vs_single"] = ratios(rates, [r["rate"] for r in single])
            out[setup][str(n)] = e
    return out


def table(summary: dict[str, Any]) -> str:
    """The Markdown table of a summary: one row per setup and worker count."""
    names = {"single": "1 node", "cluster": "3-node cluster"}
    lines = [
        "| broker | workers | tasks/s, total | vs 1 worker | vs 1 node | broker CPU | workers' CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup, by_count in summary.items():
        for n, e in sorted(by_count.items(), key=lambda kv: int(kv[0])):
            vs_single = fmt_ratio(e["vs_single"]) if "vs_single" in e else "-"
            lines.append(
                f"| {names.get(setup, setup)} | {n} | {fmt_spread(e['rate'], '/s')} | "
                f"{fmt_ratio(e['vs_one_worker'])} | {vs_single} | "
                f"{e['broker_cpu']['median']:.2f} | {e['workers_cpu']['median']:.2f} |"
            )
    return "\n".join(lines)


def replace_between(text: str, body: str) -> str:
    """Text with what lies between the scaling markers replaced by body."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the markers {BEGIN} and {END} are missing")
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


class Setup:
    """One broker under test: the URL(s) the workers get, and the nodes' processes."""

    def __init__(self, name: str, url: str, ports: Sequence[int]) -> None:
        self.name = name
        self.env = dict(os.environ, AMQP_URL=url, PYTHONUNBUFFERED="1")
        # The admin connection goes to the first node; a quorum queue is visible from all.
        self.admin = Admin(node_url(ports[0]))
        self.pids = [broker_pid(str(p)) for p in ports]

    def broker_cpu(self) -> float | None:
        """CPU seconds of every node of ours, summed (None when one is not ours)."""
        got = [cpu_seconds(p) for p in self.pids]
        return None if any(c is None for c in got) else sum(c for c in got if c is not None)


def one_run(
    setup: Setup, workers: int, tasks: int, csv: Path, tmp: Path, n: int
) -> dict[str, float]:
    """Fill a queue, let `workers` workers drain it at prefetch 1; rate and CPU."""
    q = f"bench-scaling-{setup.name}-{n}"
    logs = tmp / f"{q}-logs"
    argv = [str(BIN / "emit"), str(csv), "--queue", q, "--queue-type", "quorum", "-q"]
    run_timed([*argv, "--log-dir", str(tmp / "emit-logs")], setup.env)
    ws = Workers(setup.env, logs)
    cpu0 = setup.broker_cpu()
    began = time.perf_counter()
    ws.start(workers, q, "--seconds-per-dot", "0", "--prefetch", "1")
    ws.wait_done(tasks)
    wall = time.perf_counter() - began
    cpu1 = setup.broker_cpu()
    worker_cpu = ws.stop()
    setup.admin.delete(q)
    counted, seconds = steady_rate(logs)
    return {
        "rate": rate(counted, seconds),
        "counted": counted,
        "broker_cpu": (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else -1,
        "workers_cpu": worker_cpu / wall,
    }


def main() -> None:
    """Measure, write the JSON, and put the table into docs/SCALING.md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--tasks", type=int, default=6_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--broker-port", type=int, default=int(os.environ.get("BROKER_PORT", 5750)))
    ap.add_argument("--cluster-port", type=int, default=int(os.environ.get("CLUSTER_PORT", 5851)))
    ap.add_argument("--cluster-nodes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    a = ap.parse_args()
    cluster_ports = [a.cluster_port + i for i in range(a.cluster_nodes)]
    setups = [
        Setup("single", node_url(a.broker_port), [a.broker_port]),
        Setup("cluster", cluster_urls(a.cluster_port, a.cluster_nodes), cluster_ports),
    ]
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    runs: dict[str, dict[int, list[dict[str, float]]]] = {
        s.name: {w: [] for w in a.workers} for s in setups
    }
    n = 0
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp_name:
        tmp = Path(tmp_name)
        csv = tmp / "tasks.csv"
        csv.write_text("".join(f"Task {i}\n" for i in range(1, a.tasks + 1)))
        for rep in range(a.reps):
            for s in setups:
                for w in a.workers:
                    n += 1
                    runs[s.name][w].append(one_run(s, w, a.tasks, csv, tmp, n))
                    r = runs[s.name][w][-1]
                    say(
                        f"rep {rep + 1} {s.name} {w} worker(s): {r['rate']:,.0f}/s "
                        f"(broker CPU {r['broker_cpu']:.2f}, workers {r['workers_cpu']:.2f})"
                    )
    summary = summarise_scaling(runs)
    doc = {
        "date": started.isoformat(timespec="seconds"),
        "command": "python -m bench.scaling",
        "tasks": a.tasks,
        "reps": a.reps,
        "prefetch": 1,
        "queue_type": "quorum",
        "cluster_nodes": a.cluster_nodes,
        "machine": machine(setups[0].admin),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "runs": {k: {str(w): v for w, v in by.items()} for k, by in runs.items()},
        "summary": summary,
    }
    for s in setups:
        s.admin.close()
    write(a.out, doc)
    print(table(summary))
    if a.doc.exists():
        la = doc["load_average"]
        body = (
            f"Measured {doc['date']} by `python -m bench.scaling` ({a.tasks:,} tasks, "
            f"medians of {a.reps}, min-max in brackets; 1-minute load average "
            f"{la['start'][0]:.1f} at the start, {la['end'][0]:.1f} at the end).\n\n"
            + table(summary)
        )
        a.doc.write_text(replace_between(a.doc.read_text(), body))
        say(f"scaling: wrote {a.out.name} and the table in {a.doc.name}")


if __name__ == "__main__":
    main()
