"""docs/BENCHMARKS.md is generated from the results: the verdicts follow the numbers."""

from bench.report import render, scaling_verdict, targets
from bench.stats import ratios, spread


def _results():
    emit_r, base_r = [5_000.0, 6_000.0, 7_000.0], [10_000.0, 10_000.0, 10_000.0]
    return {
        "date": "2026-11-27T00:00:00+00:00",
        "seconds": 540.0,
        "command": "make bench",
        "plan": {"reps": 3},
        "machine": {"cores": 2, "rabbitmq": "3.10.8", "erlang": "25.2.3"},
        "emit": {
            "quorum-20000": {
                "rows": 20_000,
                "queue_type": "quorum",
                "emit": spread(emit_r),
                "emit_peak_rss_mb": spread([30.0, 30.0, 30.0]),
                "no_confirm": spread(base_r),
                "vs_no_confirm": ratios(emit_r, base_r),
            }
        },
        "fair": {
            "workers": 3,
            "seconds_per_dot": 0.05,
            "tasks": "tasks.csv",
            "file order, prefetch 1": {
                "makespan": spread([1.52, 1.53, 1.52]),
                "reference": "greedy",
                "vs_reference": ratios([1.52, 1.53, 1.52], [1.5, 1.5, 1.5]),
                "vs_lower_bound": ratios([1.52, 1.53, 1.52], [1.5, 1.5, 1.5]),
                "greedy": spread([1.5] * 3),
                "lpt": spread([1.55] * 3),
                "lower_bound": spread([1.5] * 3),
                "round_robin_schedule": spread([2.4] * 3),
            },
        },
    }


def test_a_missed_target_is_called_missed_and_a_met_one_met():
    rows = {r[0]: r for r in targets(_results())}
    emit = rows["emit, quorum, 20,000 rows, vs (c) no confirms"]
    assert emit[2].startswith("0.60x") and emit[3] == "missed"
    fair = rows["fair dispatch, file order, prefetch 1: makespan vs greedy schedule"]
    assert fair[3] == "met"


def test_the_page_names_the_machine_and_the_command_that_reproduces_it():
    page = render(_results(), notes="## Profile notes\nby hand")
    assert "| RabbitMQ | 3.10.8 |" in page and "| Erlang/OTP | 25.2.3 |" in page
    assert "make bench" in page
    assert "5,000/s" not in page  # the median is shown, with min-max
    assert "6,000/s (5,000-7,000)" in page
    assert page.rstrip().endswith("by hand")


def _workers(rates, broker, workers_cpu):
    return {
        str(n): {
            "rate": spread([r]),
            "broker_cpu": spread([b]),
            "workers_cpu": spread([c]),
        }
        for n, r, b, c in zip((1, 2, 4), rates, broker, workers_cpu, strict=True)
    }


def test_scaling_says_where_more_workers_stop_paying_and_why():
    full = _workers([1_000.0, 1_900.0, 2_000.0], [0.5, 0.9, 1.0], [0.4, 0.8, 0.9])
    text = scaling_verdict({"cores": 2}, full, [1, 2, 4])
    assert "from 2 workers on" in text and "cores are full" in text
    idle = _workers([1_000.0, 1_900.0, 2_000.0], [0.2, 0.3, 0.3], [0.2, 0.3, 0.3])
    assert "not CPU" in scaling_verdict({"cores": 2}, idle, [1, 2, 4])
    shared = scaling_verdict({"cores": 2}, idle, [1, 2, 4], load_avg=[1.0, 6.5])
    assert "did not get" in shared and "6.5" in shared
    growing = _workers([1_000.0, 1_900.0, 3_500.0], [0.2, 0.3, 0.3], [0.2, 0.3, 0.3])
    assert "not yet the limit" in scaling_verdict({"cores": 2}, growing, [1, 2, 4])


def test_the_page_shows_emit_with_and_without_its_fast_path():
    r = _results()
    fast, plain = [30_000.0, 31_000.0, 32_000.0], [15_000.0, 15_500.0, 16_000.0]
    r["emit_fast_path"] = {
        "quorum": {
            "rows": 20_000,
            "queue_type": "quorum",
            "fast": spread(fast),
            "plain": spread(plain),
            "fast_vs_plain": ratios(fast, plain),
            "fast_cpu": spread([1.0, 1.0, 1.0]),
            "plain_cpu": spread([2.5, 2.5, 2.5]),
            "plain_cpu_vs_fast": ratios([2.5] * 3, [1.0] * 3),
        }
    }
    page = render(r)
    assert "| quorum | 20,000 | 31,000/s (30,000-32,000) | 15,500/s (15,000-16,000) | 2.00x" in page
    assert "| 1.00 s (1.00-1.00) vs 2.50 s (2.50-2.50) | 2.50x (2.50-2.50) |" in page
    assert "EMIT_FAST_PATH=0" in page
    assert "fast path" not in render(_results())  # not measured, not shown
