"""The peers section of `make bench`: its stopwatch file, its error lines, its table."""

from pathlib import Path

from bench.peer_clock import Clock, read_clock
from bench.peers import PEERS, one_line, peers_section
from bench.report import render
from bench.stats import ratios, spread


def _section():
    ours = [3_200.0, 3_000.0, 3_400.0]
    dramatiq = [2_000.0, 2_100.0, 1_900.0]
    celery = [4_000.0, 3_300.0, 3_500.0]
    return {
        "tasks": 5_000,
        "reps": 3,
        "definition": "first task started to last ack",
        "versions": {"dramatiq": "2.2.1", "celery": "5.7.0", "kombu": "5.7.0", "amqp": "5.4.2"},
        "settings": {
            "ours": "work --prefetch 1",
            "dramatiq": "--processes 1 --threads 1, dramatiq_queue_prefetch=1",
            "celery-prefork": "-c 1, acks_late, prefetch multiplier 1",
        },
        "labels": {"dramatiq": "Dramatiq", "celery-prefork": "Celery (prefork pool)"},
        "classic": {
            "ours": spread(ours),
            "peers": {
                "dramatiq": {"rate": spread(dramatiq), "vs_ours": ratios(dramatiq, ours)},
                "celery-prefork": {"rate": spread(celery), "vs_ours": ratios(celery, ours)},
            },
            "not_measured": {},
            "order": ["dramatiq", "celery-prefork"],
        },
        "quorum": {
            "ours": spread(ours),
            "peers": {},
            "not_measured": {
                "dramatiq": "not supported on this broker: 406 PRECONDITION_FAILED | x-queue-type",
                "celery-prefork": "not run: celery is not installed",
            },
            "order": ["dramatiq", "celery-prefork"],
        },
    }


def test_each_repetition_shows_both_rates_and_the_peers_ratio_to_ours():
    page = "\n".join(peers_section({"peers": _section()}))
    row = next(line for line in page.splitlines() if line.startswith("| classic | Dramatiq |"))
    assert "3,200 vs 2,000/s (0.62x)" in row and "3,000 vs 2,100/s (0.70x)" in row
    assert "| 0.62x (0.56-0.70) |" in row  # the median ratio, then min-max
    assert "| 3,200/s (3,000-3,400) |" in row  # ours, from the same repetitions


def test_the_standing_names_who_was_ahead_of_whom():
    page = "\n".join(peers_section({"peers": _section()}))
    assert "On a classic queue, ours was ahead of Dramatiq at 0.62x" in page
    assert "ahead of ours: Celery (prefork pool) at 1.10x" in page


def test_a_peer_that_could_not_run_gets_a_row_and_the_reason_below():
    page = "\n".join(peers_section({"peers": _section()}))
    assert "| quorum | Dramatiq | not supported on this broker (below) |" in page
    assert "| quorum | Celery (prefork pool) | not run (below) |" in page
    note = next(line for line in page.splitlines() if line.startswith("- Dramatiq on quorum"))
    assert "406 PRECONDITION_FAILED / x-queue-type" in note  # no pipe to break the table
    assert "- Celery (prefork pool) on quorum: not run: celery is not installed" in page


def test_every_workers_settings_are_written_out():
    page = "\n".join(peers_section({"peers": _section()}))
    assert "- ours: work --prefetch 1" in page
    assert "- Dramatiq: --processes 1 --threads 1, dramatiq_queue_prefetch=1" in page
    assert "**How it is timed.** first task started to last ack" in page


def test_the_page_has_the_peers_section_only_when_it_was_measured():
    base = {"date": "2026-11-27T00:00:00+00:00", "seconds": 60.0, "command": "make bench"}
    assert "## 6. Peers" in render({**base, "peers": _section()})
    assert "## 6. Peers" not in render(base)


def test_the_clock_keeps_the_first_start_and_the_countth_ack(tmp_path: Path):
    path = tmp_path / "clock"
    assert read_clock(path) is None
    child, parent = Clock(str(path), 3), Clock(str(path), 3)  # prefork: two processes
    child.started()
    child.started()
    for _ in range(2):
        parent.acked()
    assert read_clock(path) is None  # two acks of three: not done yet
    parent.acked()
    parent.acked()  # a fourth ack writes nothing more
    timing = read_clock(path)
    assert timing is not None and timing.acks == 3 and timing.seconds >= 0
    assert path.read_text().count("first") == 1 and path.read_text().count("last") == 1


def test_the_earliest_first_start_counts_when_two_processes_wrote_one(tmp_path: Path):
    path = tmp_path / "clock"
    path.write_text("first 100.5\nfirst 100.0\nlast 102.0 4000\n")
    timing = read_clock(path)
    assert timing is not None and timing.seconds == 2.0 and timing.acks == 4000


def test_an_error_line_ends_with_the_last_thing_the_peer_printed(tmp_path: Path):
    traceback = "python -m bench.peer_dramatiq... exited 1:\nTraceback ...\n  File x\nConnectionClosed: 406\n"
    assert one_line(traceback, tmp_path / "none.log") == (
        "python -m bench.peer_dramatiq... exited 1: (its last output: ConnectionClosed: 406)"
    )
    log = tmp_path / "worker.log"
    log.write_text("booting\nModuleNotFoundError: No module named 'x'\n\n")
    assert one_line("the worker exited 1 before its last ack", log) == (
        "the worker exited 1 before its last ack "
        "(its last output: ModuleNotFoundError: No module named 'x')"
    )


def test_peer_commands_come_from_the_venv_with_the_queue_filled_in():
    argv = {p.key: p.argv("q-7") for p in PEERS}
    assert argv["dramatiq"][0].endswith("/dramatiq")
    assert argv["dramatiq"][-2:] == ["--queues", "q-7"]
    assert argv["celery-prefork"][-6:] == ["-P", "prefork", "-c", "1", "-Q", "q-7"]
    assert argv["celery-threads"][-6:] == ["-P", "threads", "-c", "1", "-Q", "q-7"]
