"""The peers section of `make bench`: Dramatiq and Celery beside `work`, on the same broker.

    python -m bench.run --only peers [--work-tasks 5000]

Each repetition fills a fresh queue with the work section's number of no-op tasks and lets
one worker drain it, for ours and then for every peer, on each queue type; the peers' rates
are reported as ratios against ours in the same repetition. The settings are the ones a user
would pick for fair dispatch: one worker process, one task at a time (prefetch 1), the ack
after the task. The clock runs from the first task's start to the last ack, in the worker's
own process, the same way for all (see DEFINITION). A peer that is not installed, or fails,
is named in the results and the report, and the rest of the bench goes on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BIN, ROOT, Rig, Workers, run_timed, say, steady_rate, table
from bench.peer_clock import read_clock
from bench.stats import fmt_num, fmt_ratio, fmt_spread, rate, ratios, spread

#: How each rate is timed; written into the results and the report.
DEFINITION = (
    "Each run starts with all its tasks already in a fresh queue, then starts the worker. "
    "The rate is the tasks divided by the time from the moment the first task starts, to "
    "the moment the last task is acknowledged, as the worker's own process sees it: so "
    "process start-up, connecting and declaring are left out, for every worker alike. "
    "Ours: the first `started` line to the last `done` line of its log (the `done` line is "
    "stamped just before its ack is sent, as the work section reads it). Dramatiq: the "
    "actor's first call to the `after_ack` middleware hook of the last message. Celery: the "
    "task's first call (in the pool child with prefork) to the return of the last "
    "`Request.acknowledge()` (in the main process). Wall-clock time in all three."
)

#: What our worker runs with here, for the report.
OURS_SETTINGS = (
    "`work --prefetch 1 --seconds-per-dot 0 -q --log-dir DIR`: one process, one task at a "
    "time, the ack after the task; its normal logging (two `key=value` lines per task, to "
    "its log file). The tasks are zero-dot rows published by `emit` (persistent, confirmed)."
)


def dramatiq_quorum_arguments(queue: str) -> dict[str, str]:
    """The arguments Dramatiq declares its queue with, plus the quorum type."""
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{queue}.XQ",
        "x-queue-type": "quorum",
    }


@dataclass(frozen=True)
class Peer:
    """One peer worker: how to fill its queue, how to start it, and what it was set to."""

    key: str
    label: str
    package: str  # the distribution that must be installed
    module: str  # the bench module holding its app, no-op task and clock hooks
    worker: str  # the command, its first word a script in the venv; {queue} is replaced
    settings: str
    env: dict[str, str] = field(default_factory=dict)
    kinds: tuple[str, ...] = ("quorum", "classic")  # the queue types it runs on
    # For a peer that cannot declare a quorum queue itself: the arguments of the quorum queue
    # we declare before its client does (as a user would, so it uses one that exists).
    predeclare_quorum: Callable[[str], dict[str, str]] | None = None

    def argv(self, queue: str) -> list[str]:
        """The command that starts this peer's worker on `queue`."""
        script, *args = self.worker.split()
        return [str(BIN / script), *(a.format(queue=queue) for a in args)]


DRAMATIQ_WORKER = "dramatiq bench.peer_dramatiq --processes 1 --threads 1 --queues {queue}"
DRAMATIQ_SETTINGS = (
    "`dramatiq bench.peer_dramatiq --processes 1 --threads 1 --queues QUEUE` with "
    "`dramatiq_queue_prefetch=1` in the environment (Dramatiq's own setting; without it the "
    "prefetch is threads x 2 = 2). `RabbitmqBroker(url=...)` with its defaults and the "
    "default middleware (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines, "
    "Retries); Dramatiq always acks after the actor returns. It logs nothing per task at "
    "its default level. Its delay-queue consumer (QUEUE.DQ, empty here) keeps its default "
    "prefetch of threads x 1000. Dramatiq has no setting for the queue type: for the "
    "quorum queue, the benchmark declares QUEUE as quorum first, with Dramatiq's own "
    "arguments, and Dramatiq's declare then meets an existing queue."
)
CELERY_SETTINGS = (
    "`celery -A bench.peer_celery worker -P prefork -c 1 -Q QUEUE` (prefork is Celery's "
    "default pool): `task_acks_late=True`, `worker_prefetch_multiplier=1` (so the prefetch "
    "is 1 x 1 = 1: channel-wide, as global QoS, on a classic queue; per consumer on a quorum "
    "queue), no result backend (`task_ignore_result=True`), `task_default_queue_type`"
    " set to the queue type (Celery >= 5.5). On a quorum queue, as Celery's docs say, a "
    "topic exchange (`task_default_exchange_type`); the worker turns global QoS off by "
    "itself (`worker_detect_quorum_queues`), and its native delayed delivery declares 28 "
    "idle `celery_delayed_*` quorum queues, which the benchmark leaves on the broker since "
    "a real deployment may share them. Default log level (WARNING: nothing per task); "
    "mingle, gossip and heartbeats as they come."
)

PEERS = (
    Peer(
        key="dramatiq",
        label="Dramatiq",
        package="dramatiq",
        module="bench.peer_dramatiq",
        worker=DRAMATIQ_WORKER,
        settings=DRAMATIQ_SETTINGS,
        env={"dramatiq_queue_prefetch": "1"},
        predeclare_quorum=dramatiq_quorum_arguments,
    ),
    Peer(
        key="dramatiq-quorum-subclass",
        label="Dramatiq (quorum by a subclass)",
        package="dramatiq",
        module="bench.peer_dramatiq",
        worker=DRAMATIQ_WORKER,
        settings=(
            "as Dramatiq, with `QuorumRabbitmqBroker` (bench/peer_dramatiq.py): a subclass "
            "that adds `x-queue-type: quorum` to what the private `_build_queue_arguments()` "
            "returns, so that Dramatiq declares its queues as quorum itself. Not supported "
            "by Dramatiq: shown for what the queue type costs it where the declare above "
            "is refused."
        ),
        env={"dramatiq_queue_prefetch": "1", "BENCH_DRAMATIQ_QUORUM_SUBCLASS": "1"},
        kinds=("quorum",),
    ),
    Peer(
        key="celery-prefork",
        label="Celery (prefork pool)",
        package="celery",
        module="bench.peer_celery",
        worker="celery -A bench.peer_celery worker -P prefork -c 1 -Q {queue}",
        settings=CELERY_SETTINGS,
    ),
    Peer(
        key="celery-threads",
        label="Celery (threads pool)",
        package="celery",
        module="bench.peer_celery",
        worker="celery -A bench.peer_celery worker -P threads -c 1 -Q {queue}",
        settings="as Celery (prefork pool), with `-P threads`: the task runs on a thread of "
        "the worker's process, so no process hop per task.",
    ),
)


def versions() -> dict[str, str]:
    """Installed versions of the peers and their AMQP clients ('not installed' otherwise)."""
    out = {}
    for name in ("dramatiq", "celery", "kombu", "amqp"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def missing(peer: Peer) -> str | None:
    """Why a peer cannot run here, or None."""
    if importlib.util.find_spec(peer.package) is None:
        return (
            f"{peer.package} is not installed: `make bench` installs the bench extra "
            "(`.venv/bin/pip install -e '.[bench]'`); that install failed or was skipped"
        )
    return None


# -- one run -------------------------------------------------------------------------------------
def ours_run(bench: Rig, kind: str) -> float:
    """Our worker on a fresh queue of `kind`: tasks per second, first start to last done."""
    n = bench.plan.work_tasks
    q = bench.queue("peers-ours")
    bench.fill(q, n, kind)
    logs = bench.tmp / f"{q}-logs"
    ws = Workers(bench.env, logs)
    try:
        ws.start(1, q, "--seconds-per-dot", "0", "--prefetch", "1")
        ws.wait_done(n)
    finally:
        ws.stop()
        bench.admin.delete(q)
    counted, seconds = steady_rate(logs)
    return rate(counted, seconds)


def peer_run(bench: Rig, peer: Peer, kind: str, timeout: float = 300) -> float:
    """One peer's worker on a fresh queue of `kind`: tasks per second, first start to last ack."""
    n = bench.plan.work_tasks
    q = bench.queue(f"peers-{peer.key}")
    clock = bench.tmp / f"{q}.clock"
    env = dict(
        bench.env,
        **peer.env,
        PYTHONPATH=str(ROOT),
        BENCH_PEER_QUEUE=q,
        BENCH_PEER_QUEUE_TYPE=kind,
        BENCH_PEER_CLOCK=str(clock),
        BENCH_PEER_COUNT=str(n),
    )
    log = bench.tmp / f"{q}.log"
    try:
        if kind == "quorum" and peer.predeclare_quorum:
            ch = bench.admin.conn.channel()
            ch.queue_declare(q, durable=True, arguments=peer.predeclare_quorum(q))
            ch.close()
        # Through the peer's own client, so its queue, exchange and message format are its own.
        try:
            run_timed([sys.executable, "-m", peer.module, "fill", str(n)], env)
        except RuntimeError as exc:
            if "PRECONDITION_FAILED" in str(exc):
                last = str(exc).strip().splitlines()[-1].strip()
                raise Unsupported(
                    f"its client's declare of the queue was refused: {last}"
                ) from None
            raise
        # Its client publishes without confirms (its default): count what arrived.
        got = bench.admin.count(q)
        if got != n:
            raise RuntimeError(f"{peer.label}: {got:,} of {n:,} tasks reached the queue")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                peer.argv(q),
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its pool children share the group we stop
            )
            try:
                timing = wait_clock(clock, proc, timeout)
            finally:
                stop(proc)
        if timing.acks != n:
            raise RuntimeError(f"{peer.label}: {timing.acks} acks counted, {n} expected")
        return rate(n, timing.seconds)
    except Unsupported:
        raise
    except RuntimeError as exc:
        raise RuntimeError(one_line(str(exc), log)) from None
    except OSError as exc:  # e.g. its command is not in the venv
        raise RuntimeError(f"could not start: {exc}") from None
    finally:
        cleanup(bench, q)


class Unsupported(RuntimeError):
    """The broker refused the peer's own declaration of the queue type asked for."""


def one_line(message: str, log: Path) -> str:
    """An error in one line: its first line, then the last line the peer printed (the
    message's own last line, or else the worker's log), where a traceback ends."""
    lines = [x.strip() for x in message.strip().splitlines() if x.strip()] or ["failed"]
    head, rest = lines[0], lines[1:]
    if not rest and log.exists():
        rest = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return f"{head} (its last output: {rest[-1]})" if rest else head


def wait_clock(clock: Path, proc: subprocess.Popen[bytes], timeout: float) -> Any:
    """Until the clock file has the last ack; the worker must stay up meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        timing = read_clock(clock)
        if timing is not None:
            return timing
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited {proc.returncode} before its last ack")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no last ack within {timeout:g} s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM to the worker (a warm stop for both peers, passed on to their children), then
    SIGKILL to its process group for whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def cleanup(bench: Rig, queue: str) -> None:
    """Delete what a peer declared for this run: its queue, Dramatiq's .DQ and .XQ, Celery's
    exchange of the same name (each name is this run's own)."""
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        with contextlib.suppress(Exception):
            bench.admin.delete(name)
    with contextlib.suppress(Exception):
        ch = bench.admin.conn.channel()
        ch.exchange_delete(queue)
        ch.close()


# -- the section ----------------------------------------------------------------------------------
def bench_peers(bench: Rig, kinds: tuple[str, ...] = ("quorum", "classic")) -> dict[str, Any]:
    """Ours and every peer, interleaved repetition by repetition, on each queue type."""
    p = bench.plan
    out: dict[str, Any] = {
        "tasks": p.work_tasks,
        "reps": p.reps,
        "definition": DEFINITION,
        "versions": versions(),
        "settings": {"ours": OURS_SETTINGS, **{peer.key: peer.settings for peer in PEERS}},
        "labels": {peer.key: peer.label for peer in PEERS},
    }
    for kind in kinds:
        ours: list[float] = []
        runs: dict[str, list[float]] = {}
        failed: dict[str, str] = {}
        for peer in PEERS:
            if kind not in peer.kinds:
                continue
            if why := missing(peer):
                failed[peer.key] = "not run: " + why
            else:
                runs[peer.key] = []
        for rep in range(p.reps):
            ours.append(ours_run(bench, kind))
            line = [f"ours {ours[-1]:,.0f}/s"]
            for peer in PEERS:
                if peer.key not in runs:
                    continue
                try:
                    got = peer_run(bench, peer, kind)
                except Unsupported as exc:
                    failed[peer.key] = f"not supported on this broker: {exc}"
                    del runs[peer.key]
                    line.append(f"{peer.key} not supported")
                    continue
                except Exception as exc:
                    # One failure ends this peer's runs on this queue type; the rest go on.
                    text = str(exc) if isinstance(exc, RuntimeError) else repr(exc)
                    failed[peer.key] = f"failed in repetition {rep + 1}: {first_line(text)}"
                    del runs[peer.key]
                    line.append(f"{peer.key} FAILED")
                    continue
                runs[peer.key].append(got)
                line.append(f"{peer.key} {got:,.0f}/s ({got / ours[-1]:.2f}x)")
            say(f"peers {kind} rep {rep + 1}: " + ", ".join(line))
        out[kind] = {
            "ours": spread(ours),
            "peers": {
                key: {"rate": spread(rs), "vs_ours": ratios(rs, ours)} for key, rs in runs.items()
            },
            "not_measured": failed,
            "order": [peer.key for peer in PEERS if kind in peer.kinds],
        }
    bench.results["peers"] = out
    return out


# -- the report --------------------------------------------------------------------------------
def per_rep(ours: list[float], theirs: list[float]) -> str:
    """'3,200 vs 2,000/s (0.63x); ...': each repetition's two rates and their ratio."""
    return "; ".join(
        f"{fmt_num(o)} vs {fmt_num(t)}/s ({t / o:.2f}x)" for o, t in zip(ours, theirs, strict=True)
    )


def peers_rows(section: dict[str, Any]) -> list[list[str]]:
    """One row per queue type and peer: its rate, ours, the ratio, each repetition."""
    labels = section.get("labels", {})
    rows: list[list[str]] = []
    for kind in ("quorum", "classic"):
        s = section.get(kind)
        if not s:
            continue
        ours = s["ours"]
        for key in s.get("order", labels):
            label = labels.get(key, key)
            if key in s["peers"]:
                e = s["peers"][key]
                rows.append(
                    [
                        kind,
                        label,
                        fmt_spread(e["rate"], "/s"),
                        fmt_spread(ours, "/s"),
                        fmt_ratio(e["vs_ours"]),
                        per_rep(ours["values"], e["rate"]["values"]),
                    ]
                )
            elif key in s.get("not_measured", {}):
                why = s["not_measured"][key].split(":", 1)[0]
                rows.append([kind, label, f"{why} (below)", fmt_spread(ours, "/s"), "-", "-"])
    return rows


def standing(section: dict[str, Any]) -> list[str]:
    """Per queue type, one sentence: the peers ours was ahead of, and any that was ahead."""
    labels = section.get("labels", {})
    out = []
    for kind in ("quorum", "classic"):
        peers = section.get(kind, {}).get("peers", {})
        if not peers:
            continue
        median = {labels.get(k, k): e["vs_ours"]["median"] for k, e in peers.items()}
        behind = [f"{name} at {x:.2f}x" for name, x in median.items() if x < 1]
        ahead = [f"{name} at {x:.2f}x" for name, x in median.items() if x >= 1]
        text = f"On a {kind} queue, "
        if behind:
            text += "ours was ahead of " + ", ".join(behind)
        if ahead:
            text += ("; " if behind else "") + "ahead of ours: " + ", ".join(ahead)
        out.append(text + " (medians of the ratios).")
    return out


def first_line(text: str) -> str:
    """A table cell: the first line of a message, without pipes."""
    return text.splitlines()[0].replace("|", "/") if text else ""


def peers_section(r: dict[str, Any]) -> list[str]:
    """The report's section on Dramatiq and Celery, measured beside our worker."""
    section = r.get("peers")
    if not section:
        return []
    v = section.get("versions", {})
    out = [
        "## 6. Peers: Dramatiq and Celery",
        "",
        f"{section['tasks']:,} no-op tasks on a fresh queue, drained by one worker, for ours "
        f"and for each peer in turn, {section['reps']} repetitions interleaved (ours, then "
        "every peer, then again), on the same broker. Each peer's rate is set against ours "
        "from the same repetition: above 1.00x the peer is faster. Versions: Dramatiq "
        f"{v.get('dramatiq', '?')}, Celery {v.get('celery', '?')} (kombu {v.get('kombu', '?')}, "
        f"py-amqp {v.get('amqp', '?')}).",
        "",
        *table(
            [
                "queue",
                "peer",
                "peer's rate",
                "ours",
                "peer / ours",
                "each repetition: ours vs peer",
            ],
            peers_rows(section),
        ),
        *(f"{line}\n" for line in standing(section)),
        f"**How it is timed.** {section['definition']}",
        "",
        "**Settings.** Each worker runs as a user would set it up for fair dispatch:",
        "",
        f"- ours: {section['settings']['ours']}",
    ]
    labels = section.get("labels", {})
    for key, text in section["settings"].items():
        if key != "ours":
            out.append(f"- {labels.get(key, key)}: {text}")
    out.append("")
    notes = [
        f"- {labels.get(key, key)} on {kind}: {first_line(why)}"
        for kind in ("quorum", "classic")
        for key, why in section.get(kind, {}).get("not_measured", {}).items()
    ]
    if notes:
        out += ["**Not measured.**", "", *notes, ""]
    return out
