"""What every bench section shares: the processes it runs, the broker's admin client, the
log counters, and `Rig` (one run's plan, broker, scratch directory and queue names).

bench/run.py imports the sections (events.py, peers.py) and they import this module, never
run.py: the helpers live below the sections, the orchestrator above them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

from utils.eventlog.format import parse_ts

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Plan:
    """Sizes and repetition counts, chosen so that the whole run fits in 10 minutes."""

    reps: int = 3
    emit_rows: tuple[int, ...] = (20_000, 200_000)
    per_row_rows: int = 1_000  # baseline (a): a connection per row is slow
    per_row_queue_types: tuple[str, ...] = ("quorum",)  # the default type only, for time
    confirm_each_rows: int = 1_000  # baseline (b): one round trip per row
    # 10,000 rather than the 20,000: the rate is taken while every worker is busy,
    # so the count only sets how long that lasts; 20,000 would not fit in 10 minutes.
    work_tasks: int = 10_000
    # The work section's repetitions: one worker against the bare consumer at prefetch 1
    # moves by +-10% from one repetition to the next on a 2-core machine, so 3 say little.
    work_reps: int = 5
    fair_seconds_per_dot: float = 0.05
    fair_workers: int = 3
    mem_emit_rows: tuple[int, int] = (100_000, 1_000_000)
    mem_worker_tasks: tuple[int, int] = (1_000, 100_000)
    # Prefetch 10 runs the same code per task as prefetch 1, in half the time.
    mem_worker_prefetch: int = 10
    scaling_workers: tuple[int, ...] = (1, 2, 4)


# -- progress ---------------------------------------------------------------------------------
T0 = time.monotonic()


def say(text: str) -> None:
    """One progress line with the time since the start."""
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


# -- the broker, as the benchmark's own admin client --------------------------------------------
class Admin:
    """A plain connection for deleting queues and counting messages between runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.server = {
            k: (v.decode() if isinstance(v, bytes) else v)
            for k, v in self.conn._impl.server_properties.items()
            if k in ("product", "version")
        }

    def count(self, queue: str) -> int:
        """Messages in a queue once the count stops moving (a publish may still be landing)."""
        last = -1
        for _ in range(15):
            ch = self.conn.channel()
            n = ch.queue_declare(queue, passive=True).method.message_count
            ch.close()
            if n == last:
                return n
            last = n
            time.sleep(0.2)
        return last

    def delete(self, queue: str) -> None:
        """Delete a queue, its dead-letter queue and the event stream its workers and emit made."""
        for name in (queue, queue + ".dead", queue + ".events"):
            ch = self.conn.channel()
            ch.queue_delete(name)
            ch.close()

    def close(self) -> None:
        self.conn.close()


def broker_pid(port: str | None = None) -> int | None:
    """The beam.smp of our local node, when `scripts/broker` started it (for its CPU time)."""
    port = port or os.environ.get("BROKER_PORT", "5672")
    pidfile = ROOT / ".broker" / port / "rabbit.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a running process, from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm(pid: int, key: str) -> int | None:
    """A VmRSS / VmHWM line of /proc/PID/status, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Finished:
    """A child process that ran to its end: how long, how much CPU and memory, what it said."""

    wall: float
    cpu: float
    maxrss_kb: int
    stdout: str
    code: int


def run_timed(argv: Sequence[str], env: dict[str, str], timeout: float = 600) -> Finished:
    """Run a command to its end; wall time from spawn to reap, and the child's own rusage."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = _wait4(proc, timeout)
        wall = time.perf_counter() - began
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {code}:\n{text[-2000:]}")
    return Finished(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, text, code)


def _wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, Any]:
    """os.wait4 with a time-out (polling, as wait4 itself has none)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{proc.args!r} did not finish within {timeout:g} s")
        time.sleep(0.02)


class Workers:
    """`work` processes started in the background, each logging to log_dir."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, queue: str, *extra: str) -> None:
        for i in range(1, n + 1):
            argv = [str(BIN / "work"), "--name", f"w{i}", "--queue", queue, "-q"]
            argv += ["--log-dir", str(self.log_dir), *extra]
            self.procs.append(
                subprocess.Popen(
                    argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )

    def wait_ready(self, n: int, timeout: float = 60) -> None:
        """Until n worker_ready events are in the logs (every worker is consuming)."""
        self._wait(lambda: count_events(self.log_dir, "worker_ready") >= n, timeout, "ready")

    def wait_done(self, n: int, timeout: float = 180) -> None:
        self._wait(lambda: count_events(self.log_dir, "done") >= n, timeout, f"{n} done")

    def _wait(self, ok: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p for p in self.procs if p.poll() not in (None, 0)]
            if dead:
                raise RuntimeError(f"a worker exited {dead[0].returncode} before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not {what} within {timeout:g} s")
            time.sleep(0.05)

    def reap(self, timeout: float = 120) -> float:
        """Wait for every worker to exit on its own; their total CPU seconds."""
        cpu = 0.0
        for p in self.procs:
            _, _, usage = _wait4(p, timeout)
            cpu += usage.ru_utime + usage.ru_stime
        self.procs = []
        return cpu

    def stop(self) -> float:
        """SIGTERM (a warm stop) to every worker, then reap them."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        return self.reap()


def count_events(log_dir: Path, event: str) -> int:
    needle = f" event={event} "
    n = 0
    for path in log_dir.glob("worker-*.log"):
        with open(path, encoding="utf-8") as f:
            n += sum(1 for line in f if needle in line)
    return n


def steady_rate(log_dir: Path) -> tuple[int, float]:
    """Tasks done per second while every worker was busy: from the last worker's first
    `started` to the last `done`, counting the tasks done in that window."""
    firsts: list[str] = []
    dones: list[str] = []
    for path in sorted(log_dir.glob("worker-*.log")):
        first = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                if " event=done " in line:
                    dones.append(line[3:27])
                elif first is None and " event=started " in line:
                    first = line[3:27]
        if first:
            firsts.append(first)
    t0, t1 = parse_ts(max(firsts)), parse_ts(max(dones))
    counted = sum(1 for d in dones if parse_ts(d) >= t0)
    return counted, (t1 - t0).total_seconds()


# -- one run's rig ---------------------------------------------------------------------------------
class Rig:
    """One benchmark run's plan, broker URL and scratch directory; fresh queue names, CSVs,
    and emit runs. The sections (bench/run.py's Bench, events.py, peers.py) build on it."""

    def __init__(self, plan: Plan, url: str, tmp: Path) -> None:
        self.plan = plan
        self.url = url
        self.tmp = tmp
        self.env = dict(os.environ, AMQP_URL=url, PYTHONUNBUFFERED="1")
        self.admin = Admin(url)
        self.broker = broker_pid()
        self.results: dict[str, Any] = {}
        self.n = 0

    def queue(self, what: str) -> str:
        self.n += 1
        return f"bench-{what}-{self.n}"

    def csv(self, rows: int, name: str = "rows") -> Path:
        """A CSV of `rows` zero-dot tasks ('Task 1', 'Task 2', ...), made once."""
        path = self.tmp / f"{name}-{rows}.csv"
        if not path.exists():
            with open(path, "w") as f:
                f.writelines(f"Task {i}\n" for i in range(1, rows + 1))
        return path

    def emit(self, csv: Path, queue: str, kind: str, *extra: str) -> Finished:
        logs = self.tmp / "emit-logs"
        argv = [str(BIN / "emit"), str(csv), "--queue", queue, "--queue-type", kind, "-q"]
        return run_timed([*argv, "--log-dir", str(logs), *extra], self.env)

    def baseline_publish(self, mode: str, csv: Path, queue: str, kind: str) -> Finished:
        argv = [sys.executable, str(ROOT / "bench" / "baseline_publish.py"), mode, str(csv)]
        return run_timed(
            [*argv, "--url", self.url, "--queue", queue, "--queue-type", kind], self.env
        )

    def fill(self, queue: str, tasks: int, kind: str = "quorum") -> None:
        """Put `tasks` zero-dot tasks on a fresh queue, every one confirmed (by emit: the
        no-confirm baseline was seen to lose a few dozen of 10,000 when it closes)."""
        self.emit(self.csv(tasks), queue, kind)


def watch_done(log: Path, target: int, proc: subprocess.Popen[bytes], stall: float = 60) -> int:
    """Follow a worker's log until it has logged `target` done events; how many it had.

    The log rotates every 10 MB: when the file is replaced, the rest of the old one (now
    LOG.1) is read first.
    """
    done = 0
    pos = 0
    inode = None
    moved = time.monotonic()
    while done < target:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited after {done} tasks")
        if time.monotonic() - moved > stall:
            raise RuntimeError(f"the worker's log stopped at {done} done tasks")
        if log.exists():
            now = log.stat().st_ino
            if inode is not None and now != inode:
                done += _count_done(log.with_name(log.name + ".1"), pos)[0]
                pos = 0
            inode = now
            n, pos = _count_done(log, pos)
            if n:
                done += n
                moved = time.monotonic()
        if done < target:
            time.sleep(0.01)
    return done


def _count_done(path: Path, pos: int) -> tuple[int, int]:
    """Done events in whole lines from byte `pos` on, and where the last whole line ends."""
    with open(path, "rb") as f:
        f.seek(pos)
        chunk = f.read()
    cut = chunk.rfind(b"\n") + 1
    return chunk[:cut].count(b" event=done "), pos + cut


# -- the machine ----------------------------------------------------------------------------------
def machine(admin: Admin) -> dict[str, Any]:
    """Cores, CPU model, and the versions every figure depends on."""
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m[1] if m else ""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "rabbitmq": admin.server.get("version", "?"),
        "erlang": erlang_version(),
        "python": platform.python_version(),
        "pika": pika.__version__,
    }


def erlang_version() -> str:
    for path in sorted(Path("/usr/lib/erlang/releases").glob("*/OTP_VERSION")):
        return path.read_text().strip()
    return "?"


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]
