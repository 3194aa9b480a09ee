"""tasks dashboard without a browser: the fold, the log tail, /metrics, and who may ask.

The browser, a real run and the broker are in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inspector.dashboard import state as state_mod
from inspector.dashboard.server import Dashboard, is_loopback, make_server
from inspector.dashboard.sources import LogTail
from inspector.dashboard.state import DashboardState, TaskSet
from tests.helpers import BIN, ROOT, dashboard_port, no_traceback, run, wait_for
from utils.eventlog.format import format_event

RUN = "20261127T100000-ab12"
#: The dashboard's port in these tests (0: any free one); TEST_DASHBOARD_PORT pins a range
#: (that port plus the xdist worker's number).
PORT = dashboard_port()


def line(ts: str, event: str, **fields: object) -> str:
    """A log line exactly as utils/eventlog/format.py writes it, at a given time."""
    return f"ts={ts} " + format_event(event, **fields).split(" ", 1)[1]


def ts(second: float) -> str:
    """The log time `second` seconds after 10:00 on the run's day."""
    t = datetime(2026, 11, 27, 10, tzinfo=timezone.utc) + timedelta(seconds=second)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_lines(workers: int = 2, tasks: int = 6, fail_row: int | None = None) -> list[str]:
    """A small run: emit, workers ready, every task started and done (one may fail)."""
    out = [line(ts(0), "emit_started", run=RUN, source="t.csv", queue="q", total=tasks)]
    out += [line(ts(0.1), "worker_ready", worker=f"w{i}", node="h:1") for i in range(workers)]
    t = 1.0
    for row in range(1, tasks + 1):
        w = f"w{row % workers}"
        ids = {"worker": w, "task": f"{RUN}-{row}", "row": row, "run": RUN}
        out.append(line(ts(t), "started", **ids, dots=1, attempt=1, body=f"Task {row} ."))
        if row == fail_row:
            out.append(line(ts(t + 0.5), "failed", **ids, attempt=1, of=1, reason="boom"))
            out.append(line(ts(t + 0.6), "dead_lettered", **ids, queue="q.dead", reason="x"))
        else:
            out.append(line(ts(t + 0.5), "done", **ids, seconds=0.5, attempt=1))
        t += 1.0
    out.append(line(ts(t), "emit_done", run=RUN, queue="q", rows=f"1-{tasks}", total=tasks))
    return out


def folded(lines: list[str], **kw: object) -> DashboardState:
    from utils.eventlog.format import parse_line

    s = DashboardState(**kw)  # type: ignore[arg-type]
    s.apply_all([e for e in (parse_line(x) for x in lines) if e])
    return s


# -- the fold -----------------------------------------------------------------------------------
def test_a_run_folds_into_counts_per_worker_and_a_finished_progress() -> None:
    s = folded(run_lines(workers=2, tasks=6, fail_row=3), queue="q")
    snap = s.snapshot(now=1e10)
    run = snap["run"]
    assert run["id"] == RUN
    assert (run["emitted"], run["done"], run["failed"], run["dead_lettered"]) == (6, 5, 1, 1)
    assert run["finished"] == 6 and run["progress"] == 1.0 and run["eta_seconds"] == 0.0
    assert {w["name"]: w["done"] for w in snap["workers"]} == {"w0": 3, "w1": 2}
    assert [f["row"] for f in snap["failures"]] == [3]
    assert snap["failures"][0]["dead_lettered"] is True
    assert snap["failures"][0]["body"] == "Task 3 ."
    assert len(snap["timeline"]["bars"]) == 6


def test_a_task_done_twice_counts_once_in_the_run_and_shows_as_a_duplicate() -> None:
    lines = run_lines(workers=1, tasks=2)
    ids = {"worker": "w0", "task": f"{RUN}-1", "row": 1, "run": RUN}
    lines.append(line(ts(9), "started", **ids, dots=1, attempt=1, redelivered=True, body="x"))
    lines.append(line(ts(9.5), "done", **ids, seconds=0.5))
    run = folded(lines).snapshot(now=1e10)["run"]
    assert (run["done"], run["duplicates"], run["redelivered"]) == (2, 1, 1)


def test_a_worker_whose_task_went_to_another_worker_is_taken_for_gone() -> None:
    lines = [
        line(ts(0), "emit_started", run=RUN, total=1),
        line(ts(1), "started", worker="a", task=f"{RUN}-1", row=1, run=RUN, body="x"),
        line(ts(5), "started", worker="b", task=f"{RUN}-1", row=1, run=RUN, redelivered=True),
    ]
    snap = folded(lines).snapshot(now=1e10)
    by_name = {w["name"]: w for w in snap["workers"]}
    assert by_name["a"]["status"] == "gone" and "went to b" in by_name["a"]["note"]
    assert by_name["b"]["status"] == "busy" and by_name["b"]["task"]["row"] == 1
    assert [b[5] for b in snap["timeline"]["bars"]] == ["lost"]


def test_a_silent_idle_worker_is_gone_when_the_queue_has_fewer_consumers() -> None:
    lines = [line(ts(0), "worker_ready", worker=w) for w in ("old", "new")]
    lines.append(line(ts(50), "worker_ready", worker="new"))
    s = folded(lines)
    now = state_mod.epoch(ts(59)) or 0.0
    statuses = {w: st for w, (st, _) in s.worker_status(now, consumers=1).items()}
    assert statuses == {"old": "gone", "new": "idle"}
    # Without the broker's count we cannot tell: both stay idle.
    assert {st for st, _ in s.worker_status(now, consumers=None).values()} == {"idle"}


def test_the_latest_run_is_shown_unless_one_is_pinned() -> None:
    other = "20261127T090000-0000"
    lines = [line(ts(0), "emit_started", run=other, total=1), *run_lines()]
    assert folded(lines).snapshot(now=1e10)["run"]["id"] == RUN
    assert folded(lines, pinned_run=other).snapshot(now=1e10)["run"]["id"] == other


def test_memory_stays_bounded_however_long_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_mod, "TIMELINE_BARS", 50)
    monkeypatch.setattr(state_mod, "FAILURES_KEPT", 5)
    lines = run_lines(workers=3, tasks=400)
    for row in range(401, 420):
        ids = {"worker": "w1", "task": f"{RUN}-{row}", "row": row, "run": RUN}
        lines.append(line(ts(row), "failed", **ids, reason="no"))
    s = folded(lines)
    run = s.runs[RUN]
    assert len(run.bars) == 50 and len(run.failures) == 5
    assert len(run.done_set.ids) == 0 and len(run.done_set.bits) <= 400 // 8 + 1
    assert run.done == 400


def test_task_set_counts_our_ids_by_row_and_others_by_id() -> None:
    ts_ = TaskSet(RUN)
    assert ts_.add(f"{RUN}-7", 7) and not ts_.add(f"{RUN}-7", 7)
    assert ts_.add("untracked-abc", None) and not ts_.add("untracked-abc", None)
    assert len(ts_.ids) == 1


def test_timeline_deltas_send_only_new_bars_and_everything_to_a_new_page() -> None:
    s = folded(run_lines(tasks=4))
    first = s.snapshot(now=1e10)
    assert first["timeline"]["full"] and len(first["timeline"]["bars"]) == 4
    since, epoch = first["version"], first["epoch"]
    ids = {"worker": "w0", "task": f"{RUN}-9", "row": 9, "run": RUN}
    s.apply({"ts": ts(20), "event": "started", **{k: str(v) for k, v in ids.items()}})
    s.apply({"ts": ts(21), "event": "done", **{k: str(v) for k, v in ids.items()}})
    delta = s.snapshot(now=1e10, since=since, epoch_seen=epoch)["timeline"]
    assert not delta["full"] and [b[2] for b in delta["bars"]] == [9]
    again = s.snapshot(now=1e10, since=since, epoch_seen="another-server")["timeline"]
    assert again["full"] and len(again["bars"]) == 5


def test_events_without_a_time_are_counted_as_unusable_not_fatal() -> None:
    s = DashboardState()
    s.apply({"event": "done", "worker": "w"})
    s.apply({"ts": "yesterday", "event": "done"})
    assert s.unusable == 2 and s.snapshot(now=0)["run"] is None


# -- /metrics -----------------------------------------------------------------------------------
def test_metrics_parse_as_prometheus_text_and_done_counters_add_up() -> None:
    s = folded(run_lines(workers=3, tasks=9, fail_row=2))
    queue = {"name": "q", "ready": 0, "unacked": 0, "consumers": 3, "dead": 1}
    text = s.metrics(queue, now=state_mod.epoch(ts(11)) or 0)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    done = families["workqueue_tasks_done"]  # the parser drops a counter's _total
    assert done.type == "counter"
    assert sum(x.value for x in done.samples if x.name.endswith("_total")) == 8
    assert {x.labels["worker"] for x in done.samples} == {"w0", "w1", "w2"}
    for name, want in (
        ("workqueue_tasks_failed", 1),
        ("workqueue_tasks_dead_lettered", 1),
        ("workqueue_queue_ready", 0),
        ("workqueue_queue_unacked", 0),
        ("workqueue_queue_consumers", 3),
        ("workqueue_workers_online", 3),
    ):
        assert (
            sum(x.value for x in families[name].samples if not x.name.endswith("_created")) == want
        )
    for name in ("workqueue_tasks_done_total", "workqueue_queue_ready", "workqueue_workers_online"):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text


def test_metric_labels_are_escaped() -> None:
    lines = [
        line(ts(0), "emit_started", run=RUN, total=1),
        line(ts(1), "started", worker='we"ird\\name', task=f"{RUN}-1", row=1, run=RUN),
        line(ts(2), "done", worker='we"ird\\name', task=f"{RUN}-1", row=1, run=RUN),
    ]
    text = folded(lines).metrics(None, now=0)
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "workqueue_tasks_done"
    ]
    assert family.samples[0].labels["worker"] == 'we"ird\\name'


# -- the log tail ---------------------------------------------------------------------------------
def test_the_tail_reads_history_then_appended_lines_and_waits_for_a_whole_line(
    tmp_path: Path,
) -> None:
    f = tmp_path / "worker-a.log"
    lines = run_lines(workers=1, tasks=2)
    f.write_text("\n".join(lines[:3]) + "\n")
    tail = LogTail(tmp_path)
    assert [e["event"] for e in tail.poll()] == ["emit_started", "worker_ready", "started"]
    assert tail.poll() == []
    with f.open("a") as out:
        out.write(lines[3] + "\n" + lines[4][:20])  # the second line is cut mid-write
    assert [e["event"] for e in tail.poll()] == ["done"]
    with f.open("a") as out:
        out.write(lines[4][20:] + "\n")
    assert [e["event"] for e in tail.poll()] == ["started"]


def test_the_tail_follows_a_rotated_log_without_losing_or_repeating_lines(tmp_path: Path) -> None:
    f = tmp_path / "worker-a.log"
    lines = run_lines(workers=1, tasks=4)
    f.write_text("\n".join(lines[:3]) + "\n")
    tail = LogTail(tmp_path)
    got = tail.poll()
    # What RotatingFileHandler does: one more line in the old file, rename, a new file.
    with f.open("a") as out:
        out.write(lines[3] + "\n")
    f.rename(tmp_path / "worker-a.log.1")
    f.write_text("\n".join(lines[4:]) + "\n")
    got += tail.poll()
    assert [e["ts"] + e["event"] for e in got] == [
        e["ts"] + e["event"] for e in folded_events(lines)
    ]
    (tmp_path / "worker-a.log.1").unlink()
    assert tail.poll() == [] and len(tail._tails) == 1


def test_the_tail_counts_lines_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "emitter.log").write_text("garbage\n" + run_lines()[0] + "\n")
    tail = LogTail(tmp_path)
    assert len(tail.poll()) == 1 and tail.unreadable == 1


def folded_events(lines: list[str]) -> list[dict[str, str]]:
    from utils.eventlog.format import parse_line

    return sorted((e for e in (parse_line(x) for x in lines) if e), key=lambda e: e["ts"])


# -- the server -----------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A dashboard on 127.0.0.1 over a log folder holding a small run; yields (app, base URL)."""
    made = []

    def start(token: str | None = None, lines: list[str] | None = None):  # type: ignore[no-untyped-def]
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        (logs / "worker-a.log").write_text("\n".join(lines or run_lines()) + "\n")
        app = Dashboard(LogTail(logs), DashboardState(), None, token=token)
        server = make_server(app, "127.0.0.1", PORT)
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        app.fold_once()
        made.append((server, app))
        return app, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, app in made:
        server.shutdown()
        server.server_close()
        app.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_server_serves_the_page_the_state_and_the_metrics(served) -> None:  # type: ignore[no-untyped-def]
    _, base = served()
    code, headers, body = get(base + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="app.js"' in body and b"http" not in body.replace(b"http-equiv", b"")
    for path in ("/app.js", "/style.css"):
        assert get(base + path)[0] == 200
    code, headers, body = get(base + "/api/state")
    assert code == 200 and json.loads(body)["run"]["done"] == 6
    code, headers, body = get(base + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert get(base + "/nothing")[0] == 404


def test_the_page_loads_nothing_from_the_internet() -> None:
    static = ROOT / "inspector" / "dashboard" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text, f.name
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, f.name


def test_a_token_is_needed_for_every_path_when_one_is_set(served) -> None:  # type: ignore[no-untyped-def]
    _, base = served(token="s3cret")
    for path in ("/", "/app.js", "/api/state", "/metrics"):
        assert get(base + path)[0] == 401, path
    assert get(base + "/api/state?token=wrong")[0] == 403
    code, headers, _ = get(base + "/?token=s3cret")
    assert code == 200 and "HttpOnly" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert get(base + "/api/state", {"Cookie": cookie})[0] == 200
    assert get(base + "/metrics", {"Authorization": "Bearer s3cret"})[0] == 200


def test_without_a_token_only_loopback_host_names_are_answered(served) -> None:  # type: ignore[no-untyped-def]
    _, base = served()
    # A page elsewhere whose name was rebound to 127.0.0.1 sends its own name as Host.
    assert get(base + "/api/state", {"Host": "attacker.example"})[0] == 403
    assert get(base + "/api/state", {"Host": "localhost:1234"})[0] == 200


def test_no_password_reaches_the_page_or_the_api(served) -> None:  # type: ignore[no-untyped-def]
    lines = run_lines()
    lines[0] = line(ts(0), "emit_started", run=RUN, total=6, url="amqp://u:hunter2@h:5672/%2F")
    _, base = served(lines=lines)
    body = get(base + "/api/state")[2]
    assert b"hunter2" not in body and json.loads(body)["run"]["broker"] == "amqp://u:***@h:5672/%2F"


def test_loopback_addresses_are_told_from_others() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.7")


# -- the command ------------------------------------------------------------------------------------
def non_loopback_address() -> str:
    """An address of this machine that is not loopback (from `ip`), else the wildcard.

    Only asked, never sent to: the dashboard refuses before it binds.
    """
    try:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except OSError:
        return "0.0.0.0"
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    return found[0] if found else "0.0.0.0"


def dashboard_env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "AMQP_"))}
    # No broker needed here: the queue panel just says it cannot reach one.
    e.update(AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F", TASK_LOG_DIR=str(tmp_path))
    return e


@pytest.mark.parametrize("bind", ["0.0.0.0", "non-loopback"])
def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path, bind: str) -> None:
    address = non_loopback_address() if bind == "non-loopback" else bind
    r = run(
        "tasks", "dashboard", "--bind", address, "--port", str(PORT), env=dashboard_env(tmp_path)
    )
    assert r.returncode == 2, r.stderr
    assert f"error: --bind {address} would show the dashboard" in r.stderr
    assert "hint: add --token" in r.stderr and no_traceback(r.stderr)


class Served:
    """A `tasks dashboard` process, the URL it printed, and what it said on stderr at the end."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "tasks"), "dashboard", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("dashboard: http://"):
            self.stop()
            raise AssertionError(f"tasks dashboard printed no URL: {first}{self.err}")
        self.url = first.split()[1]
        self.port = int(self.url.split(":")[2].split("/")[0])
        self.token = self.url.split("?token=")[1] if "?token=" in self.url else None
        self.local = f"http://127.0.0.1:{self.port}"
        self.err = ""

    def stop(self) -> int:
        """Ctrl+C, as a person would; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _out, self.err = self.proc.communicate(timeout=30)
        return self.proc.returncode


def test_bound_to_all_addresses_with_a_token_a_request_without_it_is_refused(
    tmp_path: Path,
) -> None:
    d = Served(dashboard_env(tmp_path), "--bind", "0.0.0.0", "--token", "--port", str(PORT))
    try:
        assert d.token, d.url
        assert get(d.local + "/api/state")[0] == 401
        assert get(d.local + "/api/state?token=" + "x" * len(d.token))[0] == 403
        assert get(d.local + "/api/state?token=" + d.token)[0] == 200
        assert get(d.local + "/metrics", {"Authorization": f"Bearer {d.token}"})[0] == 200
    finally:
        code = d.stop()
    assert code == 0 and no_traceback(d.err), d.err
    assert "dashboard: stopped" in d.err
    assert d.token not in d.err  # printed once, on stdout


def test_ctrl_c_stops_it_cleanly_and_a_taken_port_is_an_error(tmp_path: Path) -> None:
    d = Served(dashboard_env(tmp_path), "--port", str(PORT))
    try:
        assert d.url.startswith("http://127.0.0.1:") and d.token is None
        wait_for("the page", lambda: get(d.local + "/")[0] == 200)
        again = run("tasks", "dashboard", "--port", str(d.port), env=dashboard_env(tmp_path))
        assert again.returncode == 2, again.stderr
        assert f"error: port {d.port} on 127.0.0.1 is in use" in again.stderr
        assert no_traceback(again.stderr)
    finally:
        code = d.stop()
    assert code == 0 and no_traceback(d.err), d.err


def test_a_long_history_is_read_in_small_bites_and_folded_in_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspector.dashboard import sources

    monkeypatch.setattr(sources, "READ_BUDGET", 2048)
    monkeypatch.setattr(sources, "READ_MIN", 512)
    lines = run_lines(workers=3, tasks=60)
    for w in ("w0", "w1", "w2"):
        mine = [x for x in lines if f"worker={w} " in x]
        (tmp_path / f"worker-{w}.log").write_text("\n".join(mine) + "\n")
    (tmp_path / "emitter.log").write_text("\n".join(x for x in lines if "worker=" not in x) + "\n")
    tail = LogTail(tmp_path)
    got: list[dict[str, str]] = []
    polls = 0
    while True:
        batch = tail.poll()
        polls += 1
        got += batch
        if not batch and not tail.more:
            break
    assert polls > 5  # it did come in bites
    assert [e["ts"] for e in got] == sorted(e["ts"] for e in got)
    assert len(got) == len(lines)


def test_a_page_that_followed_another_run_gets_every_bar_of_the_new_one() -> None:
    s = folded(run_lines(tasks=3))
    snap = s.snapshot(now=1e10)
    same = s.snapshot(now=1e10, since=snap["version"], epoch_seen=snap["epoch"], run_seen=RUN)
    assert not same["timeline"]["full"] and same["timeline"]["bars"] == []
    moved = s.snapshot(now=1e10, since=snap["version"], epoch_seen=snap["epoch"], run_seen="old")
    assert moved["timeline"]["full"] and len(moved["timeline"]["bars"]) == 3


# -- hostile requests and lines (issue 23, finding 7) -------------------------------------------
def served_over(tmp_path: Path, lines: list[str], *args: str) -> Served:
    """`tasks dashboard` over a log folder holding these lines; the state has them folded."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "worker-a.log").write_text("\n".join(lines) + "\n")
    env = {**dashboard_env(tmp_path), "TASK_LOG_DIR": str(logs)}
    d = Served(env, "--port", str(PORT), *args)
    want = sum(1 for x in lines if x.startswith("ts="))

    def folded() -> bool:
        code, _, body = get(d.local + "/api/state")
        return code == 500 or json.loads(body)["source"]["events"] >= want  # 500: it failed

    wait_for("the lines folded", folded)
    return d


@pytest.mark.parametrize(
    "since",
    ["%C2%B2", "9" * 5000, "-1", "1.5", "abc", "%EF%BC%91"],  # ², 5,000 digits, ..., fullwidth 1
    ids=["superscript-two", "5000-digits", "negative", "fraction", "word", "fullwidth-digit"],
)
def test_a_bad_since_is_answered_400_with_a_short_json_error(tmp_path: Path, since: str) -> None:
    d = served_over(tmp_path, run_lines(tasks=2))
    try:
        code, headers, body = get(d.local + "/api/state?since=" + since)
        assert code == 400, body
        assert headers["Content-Type"] == "application/json"
        error = json.loads(body)["error"]
        assert error.startswith("since=") and "is not a version" in error and len(error) < 200
        code, _, body = get(d.local + "/api/state?since=3")  # and it goes on answering
        assert code == 200 and json.loads(body)["run"]["done"] == 2
    finally:
        code = d.stop()
    assert code == 0 and no_traceback(d.err), d.err


def test_a_lone_surrogate_in_a_line_is_served_escaped(tmp_path: Path) -> None:
    # A JSON-quoted value may name a lone surrogate, which no UTF-8 answer can carry (on
    # main: the connection dropped, a traceback on stderr).
    ids = {"worker": "w9", "task": f"{RUN}-9", "row": 9, "run": RUN}
    hostile = line(ts(9), "started", **ids) + r' body="\ud800\u202e"'
    d = served_over(tmp_path, [*run_lines(tasks=2), hostile])
    try:
        code, _, body = get(d.local + "/api/state")
        assert code == 200 and b"\\ud800\\u202e" in body and body.isascii()
        assert get(d.local + "/")[0] == 200 and get(d.local + "/metrics")[0] == 200
    finally:
        code = d.stop()
    assert code == 0 and no_traceback(d.err), d.err


def test_a_failure_while_answering_gets_500_and_the_server_stays_up(
    served, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    app, base = served()

    def broken(*args: object) -> bytes:
        raise RuntimeError("\x1b[2Jboom")

    app.state_json = broken
    code, headers, body = get(base + "/api/state")
    assert code == 500 and headers["Content-Type"] == "application/json"
    assert "failed to answer (RuntimeError)" in json.loads(body)["error"]
    assert get(base + "/")[0] == 200 and get(base + "/metrics")[0] == 200
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["answering GET /api/state failed: RuntimeError: \\x1b[2Jboom"]


def closed_by_server(port: int, send: bytes = b"") -> bytes:
    """Connect, send `send`, then stay silent until the server closes the connection (the
    close is the event waited for; the 60 s is a guard for a server that never does).
    What the server sent before closing."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(send)
        while chunk := s.recv(65536):
            got += chunk
    return got


@pytest.mark.parametrize("how", ["option", "variable"])
def test_an_idle_connection_is_closed_by_the_server(tmp_path: Path, how: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {**dashboard_env(tmp_path), "TASK_LOG_DIR": str(logs)}
    args = ["--idle-timeout", "0.5"]
    if how == "variable":
        env["TASK_DASHBOARD_IDLE_TIMEOUT"], args = "0.5", []
    d = Served(env, "--port", str(PORT), *args)
    try:
        assert closed_by_server(d.port) == b""  # connected, never asked
        # Half a request, never finished.
        assert closed_by_server(d.port, b"GET /api/state HTTP/1.1\r\nHost: 127") == b""
        # One answer on a kept-alive connection, then silence.
        answer = closed_by_server(d.port, b"GET /favicon.ico HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 204 ")
        assert get(d.local + "/")[0] == 200
    finally:
        code = d.stop()
    assert code == 0 and no_traceback(d.err), d.err


def test_the_idle_timeout_is_in_the_help_and_must_be_positive(tmp_path: Path) -> None:
    r = run("tasks", "dashboard", "--help", env=dashboard_env(tmp_path))
    assert "--idle-timeout SECONDS" in r.stdout and "TASK_DASHBOARD_IDLE_TIMEOUT" in r.stdout
    bad = run("tasks", "dashboard", "--idle-timeout", "0", env=dashboard_env(tmp_path))
    assert bad.returncode == 2 and "--idle-timeout" in bad.stderr and no_traceback(bad.stderr)
