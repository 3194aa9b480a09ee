"""The pure helpers of bench/scaling.py: no broker, no timing."""

import pytest

from bench.scaling import BEGIN, END, cluster_urls, replace_between, summarise_scaling, table


def run(rate: float) -> dict[str, float]:
    return {"rate": rate, "counted": 100, "broker_cpu": 0.5, "workers_cpu": 0.4}


def test_cluster_urls_name_every_node_comma_separated():
    assert cluster_urls(5851, 3) == (
        "amqp://guest:guest@localhost:5851/%2F,"
        "amqp://guest:guest@localhost:5852/%2F,"
        "amqp://guest:guest@localhost:5853/%2F"
    )


def test_summary_compares_with_one_worker_and_the_single_node_repetition_by_repetition():
    runs = {
        "single": {1: [run(100), run(200)], 2: [run(150), run(300)]},
        "cluster": {1: [run(50), run(100)], 2: [run(75), run(300)]},
    }
    s = summarise_scaling(runs)
    assert s["single"]["2"]["vs_one_worker"]["values"] == [1.5, 1.5]
    assert "vs_single" not in s["single"]["1"]
    assert s["cluster"]["1"]["vs_single"]["values"] == [0.5, 0.5]
    assert s["cluster"]["2"]["vs_single"]["values"] == [0.5, 1.0]
    assert s["cluster"]["2"]["rate"]["median"] == pytest.approx(187.5)


def test_table_has_a_row_per_setup_and_count_in_worker_order():
    runs = {"single": {w: [run(100.0 * w)] for w in (8, 1, 2)}}
    lines = table(summarise_scaling(runs)).splitlines()
    assert [line.split(" | ")[1] for line in lines[2:]] == ["1", "2", "8"]
    assert lines[-1].startswith("| 1 node | 8 | 800/s (800-800) | 8.00x")


def test_replace_between_keeps_the_page_around_the_markers():
    page = f"head\n{BEGIN}\nold table\n{END}\ntail\n"
    assert replace_between(page, "new") == f"head\n{BEGIN}\nnew\n{END}\ntail\n"


def test_replace_between_refuses_a_page_without_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_between("no markers here", "new")
