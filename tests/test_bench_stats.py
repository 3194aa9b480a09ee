"""The pure helpers of the benchmark: no broker, no timing."""

import pytest

from bench.stats import fmt_num, fmt_ratio, fmt_spread, rate, ratios, spread, verdict


def test_spread_gives_median_min_and_max_of_the_repetitions():
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"]) == (2.5, 1.0, 10.0)
    assert s["values"] == [3.0, 1.0, 2.0, 10.0]


def test_spread_of_nothing_is_refused():
    with pytest.raises(ValueError):
        spread([])


def test_ratios_pair_each_repetition_with_its_own_baseline():
    s = ratios([10.0, 30.0, 20.0], [10.0, 10.0, 40.0])
    assert s["values"] == [1.0, 3.0, 0.5]
    assert s["median"] == 1.0


def test_ratios_refuse_unpaired_or_zero_baselines():
    with pytest.raises(ValueError):
        ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        ratios([1.0], [0.0])


def test_rate_is_zero_when_nothing_was_timed():
    assert rate(20_000, 2.0) == 10_000
    assert rate(5, 0.0) == 0.0


def test_numbers_print_with_separators_and_ranges_with_a_dash():
    assert fmt_num(11035.4) == "11,035"
    assert fmt_num(12.34) == "12.3"
    assert fmt_num(1.234) == "1.23"
    assert fmt_spread({"median": 11035.0, "min": 10870.0, "max": 11200.0}, "/s") == (
        "11,035/s (10,870-11,200)"
    )
    assert fmt_ratio({"median": 0.5, "min": 0.25, "max": 1.0}) == "0.50x (0.25-1.00)"


def test_verdict_knows_targets_from_above_and_from_below():
    assert verdict(1.0, 1.0) == "met"
    assert verdict(0.99, 1.0) == "missed"
    assert verdict(1.03, 1.02, at_most=True) == "missed"
    assert verdict(1.01, 1.02, at_most=True) == "met"


def test_profile_summary_counts_own_and_total_time_per_function():
    from bench.profile import summarise_profile

    raw = (
        "main (emit.py:1);publish (publisher.py:9);encode (pika/spec.py:5) 30\n"
        "main (emit.py:1);publish (publisher.py:9) 10\n"
        "main (emit.py:1);read (source.py:3) 60\n"
    )
    text = summarise_profile(raw)
    assert text.startswith("100 samples")
    own = text.split("own time:")[1].split("total time")[0]
    assert own.splitlines()[1].split() == ["60.0%", "read", "(source.py)"]
    total = text.split("total time")[1]
    assert "100.0%  main (emit.py)" in total and "40.0%  publish (publisher.py)" in total


def test_the_worker_log_is_followed_across_a_rotation(tmp_path):
    from bench.common import watch_done

    log = tmp_path / "worker-w1.log"
    line = "ts=2026-11-27T00:00:00.000Z event=done worker=w1 task=t\n"
    log.write_text(line * 3)

    class Worker:
        """Rotates its log (as RotatingFileHandler does) on the watcher's third look."""

        polls = 0

        def poll(self):
            self.polls += 1
            if self.polls == 3:
                with open(log, "a") as f:
                    f.write(line * 2)  # written before the rotation: read from LOG.1
                log.rename(tmp_path / "worker-w1.log.1")
                log.write_text(line * 4)
            return None

    assert watch_done(log, 9, Worker(), stall=5) == 9
