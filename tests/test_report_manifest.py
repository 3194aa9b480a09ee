"""Issue 23: a manifest's claimed size costs memory only as rows actually appear.

A forged emit line claiming 2*10^7 rows once took ~43 s and ~1 GB (a list of every row
not seen done); missing rows are ranges now (utils/rowset.py), in the audit, the
whereabouts, the resend hint, --json and --csv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from inspector.analysis import summarise_run
from inspector.render import MISSING_LISTED
from inspector.runs import read_logs
from inspector.whereabouts import BrokerView, QueueView, locate
from tests.helpers import BIN, ROOT, no_traceback
from utils.rowset import RowSet

RUN = "20260101T120000-abcd"
CLAIMED = 20_000_000
#: A generous bound on a report's memory (max RSS); a list of the claimed rows took ~1 GB.
MAX_RSS_MB = 200

#: Runs the command as its own child and prints that child's max RSS (KiB): the test's
#: process has had other children, whose RSS getrusage would also count.
MEASURE = (
    "import resource, subprocess, sys;"
    "r = subprocess.run(sys.argv[1:], capture_output=True);"
    "sys.stdout.buffer.write(r.stdout); sys.stderr.buffer.write(r.stderr);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
    "sys.exit(r.returncode)"
)


def _forged_logs(d: Path, order: str = "file") -> None:
    (d / "emitter.log").write_text(
        f"ts=2026-01-01T12:00:00.000Z event=emit_started run={RUN} source=t.csv queue=q "
        f"order={order} total={CLAIMED}\n"
        f"ts=2026-01-01T12:00:01.000Z event=emit_done run={RUN} queue=q rows=1-{CLAIMED} "
        f"total={CLAIMED} republished=0\n"
    )
    (d / "worker-a.log").write_text(
        "".join(
            f"ts=2026-01-01T12:00:0{2 + i}.000Z event={ev} worker=a task={RUN}-5 row=5 "
            f"run={RUN} attempt=1{' body=x.' if ev == 'started' else ' seconds=1.0'}\n"
            for i, ev in enumerate(("started", "done"))
        )
    )


def _report(offline_env: dict[str, str], logs: Path, *args: str) -> tuple[str, int]:
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(BIN / "tasks"), "report", "--logs-only", *args],
        env={**offline_env, "TASK_QUEUE": "q"},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
    )
    *_err, rss = r.stderr.rstrip("\n").split("\n")
    assert no_traceback(r.stderr), r.stderr
    assert r.returncode == 1, r.stderr  # rows are missing
    assert int(rss) < MAX_RSS_MB * 1024, f"max RSS {int(rss) // 1024} MB for {args}"
    return r.stdout, int(rss)


def test_a_forged_manifest_of_2e7_rows_is_reported_by_ranges_in_bounded_memory(logs, offline_env):
    _forged_logs(logs)
    out, _rss = _report(offline_env, logs, str(logs))
    assert (
        f"audit: {CLAIMED} emitted, 1 done once, 0 done more than once, {CLAIMED - 1} missing"
        in out
    )
    assert f"missing rows: 1-4, 6-{CLAIMED}" in out, out
    assert f"'emit t.csv --start-row 6 --limit {CLAIMED - 5}'" in out, out
    out, _rss = _report(offline_env, logs, "--json", str(logs))
    audit = json.loads(out)["runs"][0]["audit"]
    assert audit["missing_count"] == CLAIMED - 1
    assert audit["missing_ranges"] == [[1, 4], [6, CLAIMED]]
    assert audit["missing"] == [*range(1, 5), *range(6, MISSING_LISTED + 2)]
    out, _rss = _report(offline_env, logs, "--csv", str(logs))
    lines = out.splitlines()
    # One line per row up to MISSING_LISTED, then one per range; plus the header and row 5.
    assert len(lines) == 1 + 1 + MISSING_LISTED + 1, lines[-3:]
    assert lines[-1] == f"{RUN},{MISSING_LISTED + 2}-{CLAIMED},,,,,,,,,missing,0,false,,"


def test_the_whereabouts_of_2e7_claimed_rows_are_ranges_against_the_queue_counts(logs):
    # The broker's counts (a QueueView) against the forged claim: what waits, what left.
    for order in ("file", "longest-first"):
        _forged_logs(logs, order)
        run = read_logs(logs).runs[RUN]
        s = summarise_run(run)
        q = QueueView("q", True, ready=1000, consumers=0, dead=0, unacked=0)
        (w,) = locate([(run, s)], [(run, s)], read_logs(logs), BrokerView(True, "here"), "q")
        assert w.judged_from == "logs"  # the view knows no queue q: judged from the logs
        assert w.missing == RowSet([(1, 4), (6, CLAIMED)])
        view = BrokerView(True, "here", queues={"q": q})
        (w,) = locate([(run, s)], [(run, s)], read_logs(logs), view, "q")
        assert w.waiting == 1000
        # First in, first out: the last 1000 rows published wait; the earlier ones left.
        assert w.left == RowSet([(1, 4), (6, CLAIMED - 1000)]) and w.missing == w.left


def test_a_rowset_holds_ranges_and_reads_like_the_sorted_rows():
    rows = RowSet([(1, 10), (20, 20), (11, 12)])
    assert rows.spans == ((1, 12), (20, 20)) and len(rows) == 13
    assert 12 in rows and 13 not in rows and 20 in rows and "1" not in rows
    cut = rows.without([1, 5, 12, 20, 99, None])
    assert list(cut) == [2, 3, 4, 6, 7, 8, 9, 10, 11] and cut == [2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert rows.head(3) == [1, 2, 3] and rows.first(2) == [1, 2]
    assert RowSet.of([3, 1, 2, 7]).text() == "1-3, 7" and rows.text(1) == "1-12, …"
    assert not RowSet() and RowSet() == []
