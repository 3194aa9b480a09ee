"""tasks dashboard in a real headless browser (Debian's chromium), during a real run.

Real broker, three real `work` processes, a real `emit`, and the page as a person sees it.
Chromium missing is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.browser import chromium, missing, wait_until
from tests.helpers import dashboard_port, events, no_traceback, run, spawn, wait_for
from tests.test_dashboard import Served, get

PORT = dashboard_port()
HOSTILE = "<img src=x onerror=alert(1)>"
ROWS = 24
HOSTILE_ROW = 7
#: Each task takes a moment, so that the page sees workers busy; the hostile one fails.
TASK = 'case "$TASK_BODY" in *FAIL*) echo "refused: $TASK_BODY"; exit 3;; esac; sleep 0.2'


@pytest.fixture
def browser() -> Any:
    why = missing()
    if why:
        pytest.fail(why, pytrace=False)
    with chromium() as driver:
        # Before any script of the page runs: alert() only records that it was called.
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {
                "source": "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));"
            },
        )
        yield driver


def number(driver: Any, element_id: str) -> int | None:
    text = driver.execute_script(f"return document.getElementById('{element_id}').textContent")
    digits = text.replace(",", "")
    return int(digits) if digits.isdigit() else None


def test_the_page_follows_a_three_worker_run_to_the_end_and_matches_the_logs(
    env: dict[str, str], logs: Path, tmp_path: Path, browser: Any
) -> None:
    csv = tmp_path / "tasks.csv"
    bodies = [f"Task {n} {'.' * (n % 4 + 1)}" for n in range(1, ROWS + 1)]
    bodies[HOSTILE_ROW - 1] = f"{HOSTILE} FAIL"
    csv.write_text("\n".join(bodies) + "\n")
    names = [f"dash-{n}" for n in (1, 2, 3)]
    workers = [
        spawn(
            "work",
            "--name",
            name,
            "--exec",
            TASK,
            "--shell",
            "--max-attempts",
            "2",
            "--quiet",
            env=env,
            out=tmp_path / f"{name}.out",
        )
        for name in names
    ]
    for name, w in zip(names, workers, strict=True):
        wait_for(
            f"{name} ready",
            lambda name=name: any(
                e["event"] == "worker_ready" for e in events(logs / f"worker-{name}.log")
            ),
            alive=w,
        )
    dashboard = Served(env, "--port", str(PORT))
    try:
        browser.get(dashboard.url)
        wait_until(
            "the page to show 3 workers online",
            lambda: (
                number(browser, "workers-online") == 3
                and browser.execute_script(
                    "return document.querySelectorAll('#workers tbody tr').length"
                )
                == 3
            ),
        )
        emitted = run("emit", str(csv), "--quiet", env=env)
        assert emitted.returncode == 0, emitted.stderr
        wait_until(
            "the page to show every task finished",
            lambda: (number(browser, "run-done"), number(browser, "run-dead")) == (ROWS - 1, 1),
            timeout=120,
        )
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the page: {shot}")

        # The numbers on the page are the run's, as the logs tell it.
        lines = [e for f in sorted(logs.glob("*.log")) for e in events(f)]
        done = [e for e in lines if e["event"] == "done"]
        failed = [e for e in lines if e["event"] == "failed"]
        assert len({e["row"] for e in done}) == ROWS - 1
        assert number(browser, "run-emitted") == ROWS
        assert number(browser, "run-failed") == len(failed) == 2
        per_worker = Counter(e["worker"] for e in done)
        table = browser.execute_script(
            "return [...document.querySelectorAll('#workers tbody tr')]"
            ".map(tr => [tr.dataset.worker, tr.cells[4].textContent])"
        )
        assert {name: int(n) for name, n in table} == {n: per_worker[n] for n in names}
        progress = browser.find_element("id", "progress-text").text
        assert progress.startswith(f"{ROWS} of {ROWS} finished"), progress

        # The hostile body is shown as text, and nothing in it ran.
        failures = browser.find_element("id", "failures").text
        assert HOSTILE in failures and "dead-lettered" in failures
        assert browser.execute_script("return window.__alerts") == []
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0

        # /metrics parses as Prometheus text, and its done counters add up to the run's tasks.
        code, _headers, body = get(dashboard.local + "/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        done_samples = [
            s for s in families["workqueue_tasks_done"].samples if s.name.endswith("_total")
        ]
        assert sum(s.value for s in done_samples) == len(done) == ROWS - 1
        assert {s.labels["worker"]: s.value for s in done_samples} == {
            n: per_worker[n] for n in names
        }
        (dead,) = families["workqueue_tasks_dead_lettered"].samples
        assert dead.value == 1
        (online,) = families["workqueue_workers_online"].samples
        assert online.value == 3
        (consumers,) = families["workqueue_queue_consumers"].samples
        assert consumers.value == 3
    finally:
        code = dashboard.stop()
    assert code == 0 and no_traceback(dashboard.err), dashboard.err
    assert not re.search(r"Traceback|Exception in thread", dashboard.err)
