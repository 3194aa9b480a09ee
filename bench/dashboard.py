"""How light and fast `tasks dashboard` is with 20 workers and 100,000 tasks.

    python -m bench.dashboard [--workers 20] [--tasks 100000] [--live 2000] [--no-browser]

Writes the logs of such a run (made up, in the exact format the workers write), starts the
real `tasks dashboard` on them and measures:
- the server: the time to fold the whole history, and its memory (VmRSS, and VmHWM, the
  peak) after it, beside the same for a run a tenth the size: memory bounded by the caps
  in inspector/dashboard/state.py, not by the run;
- /api/state: bytes and milliseconds, for a new page (every bar kept) and for the page's
  once-a-second poll (only what is new); /metrics the same;
- the page, in headless chromium: how long one update (render) takes, while `--live` more
  tasks are appended to the logs as a live run would, and its first full render.
Needs no broker (the queue panel just says it cannot reach one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.browser import chromium, wait_until
from utils.eventlog.format import format_event

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUN = "20261127T100000-be7c"
START = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def stamp(seconds: float) -> str:
    t = START + timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def line(at: float, event: str, **fields: Any) -> str:
    """A log line as utils/eventlog/format.py writes it, at a made-up time."""
    return f"ts={stamp(at)} " + format_event(event, **fields).split(" ", 1)[1]


class FakeRun:
    """Log lines of a run: `workers` workers sharing `tasks` tasks of 0.1-0.5 s each."""

    def __init__(self, folder: Path, workers: int, tasks: int, seed: int = 7) -> None:
        self.folder = folder
        self.names = [f"host{n % 5}-w{n:02d}" for n in range(1, workers + 1)]
        self.clock = dict.fromkeys(self.names, 1.0)
        self.rng = random.Random(seed)
        self.row = 0
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "emitter.log", "w") as f:
            f.write(line(0, "emit_started", run=RUN, source="big.csv", queue="q", total=tasks))
            f.write("\n")
        for name in self.names:
            (folder / f"worker-{name}.log").write_text(
                line(0.5, "worker_ready", worker=name, queue="q", node="localhost:5672") + "\n"
            )

    def add(self, tasks: int) -> None:
        """Append `tasks` more tasks, shared out to whichever worker is free first."""
        out: dict[str, list[str]] = {n: [] for n in self.names}
        for _ in range(tasks):
            self.row += 1
            name = min(self.names, key=self.clock.__getitem__)
            start = self.clock[name]
            secs = self.rng.choice((0.1, 0.2, 0.3, 0.5))
            ids = {"worker": name, "task": f"{RUN}-{self.row}", "row": self.row, "run": RUN}
            dots = int(secs * 10)
            out[name].append(
                line(start, "started", **ids, dots=dots, attempt=1, redelivered=False,
                     body=f"Task {self.row} " + "." * dots)
            )  # fmt: skip
            if self.row % 997 == 0:  # now and then a failure, for the failures panel
                out[name].append(line(start + secs, "failed", **ids, attempt=1, of=3,
                                      seconds=secs, reason="exit code 1"))  # fmt: skip
            else:
                out[name].append(
                    line(start + secs, "done", **ids, dots=dots, seconds=secs, attempt=1)
                )
            self.clock[name] = start + secs + 0.001
        for name, lines in out.items():
            if lines:
                with open(self.folder / f"worker-{name}.log", "a") as f:
                    f.write("\n".join(lines) + "\n")


def get(url: str) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return body, (time.perf_counter() - t0) * 1000


def proc_kib(pid: int, key: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(key + ":"):
            return int(row.split()[1])
    return 0


class Server:
    """The real `tasks dashboard` over a folder, on a free port."""

    def __init__(self, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "AMQP_"))}
        env.update(AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F", TASK_LOG_DIR=str(folder))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(BIN / "tasks"), "dashboard", "--port", "0", "--queue", "q"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().split()[1]

    def state(self, since: int = 0, epoch: str = "") -> tuple[dict[str, Any], int, float]:
        body, ms = get(f"{self.url}api/state?since={since}&epoch={epoch}")
        return json.loads(body), len(body), ms

    def wait_folded(self, events: int) -> float:
        """Seconds from the start until `events` events are folded."""
        while True:
            s, _, _ = self.state()
            if s["source"]["events"] >= events:
                return time.perf_counter() - self.started
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def measure_server(folder: Path, workers: int, tasks: int) -> dict[str, Any]:
    run = FakeRun(folder, workers, tasks)
    run.add(tasks)
    events = 1 + workers + 2 * tasks
    server = Server(folder)
    try:
        fold_s = server.wait_folded(events)
        out: dict[str, Any] = {
            "tasks": tasks,
            "workers": workers,
            "log_mib": sum(p.stat().st_size for p in folder.iterdir()) / 2**20,
            "fold_s": fold_s,
            "rss_mib": proc_kib(server.proc.pid, "VmRSS") / 1024,
            "peak_rss_mib": proc_kib(server.proc.pid, "VmHWM") / 1024,
        }
        full = [server.state() for _ in range(20)]
        snap = full[0][0]
        out["state_full_kib"] = full[0][1] / 1024
        out["state_full_ms"] = statistics.median(ms for _, _, ms in full)
        out["bars_sent"] = len(snap["timeline"]["bars"])
        polls = [server.state(snap["version"], snap["epoch"]) for _ in range(20)]
        out["state_poll_kib"] = polls[0][1] / 1024
        out["state_poll_ms"] = statistics.median(ms for _, _, ms in polls)
        metrics = [get(server.url + "metrics") for _ in range(20)]
        out["metrics_kib"] = len(metrics[0][0]) / 1024
        out["metrics_ms"] = statistics.median(ms for _, ms in metrics)
        out["done_shown"] = snap["run"]["done"]
    finally:
        server.stop()
    return out


def measure_page(folder: Path, workers: int, tasks: int, live: int) -> dict[str, Any]:
    """Render times in chromium over a run of `tasks`, while `live` more come in."""
    run = FakeRun(folder, workers, tasks + live)
    run.add(tasks)
    server = Server(folder)
    try:
        server.wait_folded(1 + workers + 2 * tasks)
        with chromium() as driver:
            driver.get(server.url)
            wait_until("the first render", lambda: driver.execute_script(
                "return window.dashboardStats && window.dashboardStats.renders >= 1"))  # fmt: skip
            first = driver.execute_script("return window.dashboardStats.renderMs[0]")
            before = driver.execute_script("return window.dashboardStats.renders")
            # A live run: `live` tasks over about 10 s, in 20 appends.
            stop = threading.Event()

            def feed() -> None:
                for _ in range(20):
                    if stop.wait(0.5):
                        return
                    run.add(live // 20)

            feeder = threading.Thread(target=feed)
            feeder.start()
            feeder.join()
            want = tasks + live
            wait_until("the page to show the live tasks", lambda: driver.execute_script(
                "return +document.getElementById('run-done').textContent.replace(/,/g, '')"
            ) >= want - want // 997, timeout=60)  # fmt: skip
            stats = driver.execute_script("return window.dashboardStats")
            times = stats["renderMs"][before:] or stats["renderMs"]
            return {
                "first_render_ms": first,
                "renders": len(times),
                "render_median_ms": statistics.median(times),
                "render_max_ms": max(times),
                "errors": stats["errors"],
                # Chromium's own figure for the page's JavaScript heap.
                "js_heap_mib": driver.execute_script(
                    "return performance.memory ? performance.memory.usedJSHeapSize : 0"
                )
                / 2**20,
            }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=2000, help="tasks added while the page is open")
    parser.add_argument("--no-browser", action="store_true", help="skip the page's render times")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        small = max(1, args.tasks // 10)
        results["small"] = measure_server(Path(tmp) / "small", args.workers, small)
        results["large"] = measure_server(Path(tmp) / "large", args.workers, args.tasks)
        if not args.no_browser:
            results["page"] = measure_page(Path(tmp) / "page", args.workers, args.tasks, args.live)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for key in ("small", "large"):
        r = results[key]
        print(
            f"server, {r['workers']} workers, {r['tasks']:,} tasks ({r['log_mib']:.1f} MiB of logs): "
            f"history folded in {r['fold_s']:.1f} s; RSS {r['rss_mib']:.0f} MiB "
            f"(peak {r['peak_rss_mib']:.0f} MiB)"
        )
        print(
            f"  /api/state for a new page: {r['state_full_kib']:.0f} KiB "
            f"({r['bars_sent']:,} bars) in {r['state_full_ms']:.1f} ms; "
            f"a poll: {r['state_poll_kib']:.1f} KiB in {r['state_poll_ms']:.1f} ms; "
            f"/metrics {r['metrics_kib']:.1f} KiB in {r['metrics_ms']:.1f} ms (medians of 20)"
        )
    if "page" in results:
        p = results["page"]
        print(
            f"page (chromium, {args.workers} workers, {args.tasks:,} tasks, {args.live:,} more "
            f"arriving live): first render {p['first_render_ms']:.1f} ms; an update "
            f"{p['render_median_ms']:.1f} ms median, {p['render_max_ms']:.1f} ms at most "
            f"over {p['renders']} updates; JS heap {p['js_heap_mib']:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
