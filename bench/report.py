"""Write docs/BENCHMARKS.md from bench/results/latest.json, so the page says what was measured.

    python -m bench.report [RESULTS_JSON] [--out docs/BENCHMARKS.md]

Hand-written profile notes in bench/NOTES.md, if present, are appended as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import ROOT, table
from bench.events import events_section
from bench.peers import peers_section
from bench.stats import fmt_num, fmt_ratio, fmt_spread, verdict

RESULTS = ROOT / "bench" / "results" / "latest.json"
NOTES = ROOT / "bench" / "NOTES.md"
OUT = ROOT / "docs" / "BENCHMARKS.md"

#: A growth of peak RSS from the small to the big emit run that still counts as flat.
FLAT = 1.10
#: Adding workers that raises throughput by less than this fraction means something else is the limit.
SATURATED = 0.15


def fmt_near(s: dict[str, Any], target: float) -> str:
    """fmt_ratio, with a third decimal where two would round a miss (or a hit) onto the target."""
    m = s["median"]
    if m != target and f"{m:.2f}" == f"{target:.2f}":
        return f"{m:.3f}x ({s['min']:.2f}-{s['max']:.2f})"
    return fmt_ratio(s)


def targets(r: dict[str, Any]) -> list[list[str]]:
    """Every target of issue 7 with what was measured and whether it was met."""
    rows: list[list[str]] = []
    for e in r.get("emit", {}).values():
        if "vs_no_confirm" in e:
            v = e["vs_no_confirm"]
            rows.append(
                [
                    f"emit, {e['queue_type']}, {e['rows']:,} rows, vs (c) no confirms",
                    ">= 1.0x",
                    fmt_ratio(v),
                    verdict(v["median"], 1.0),
                ]
            )
        if "vs_per_row_connection" in e:
            v = e["vs_per_row_connection"]
            rows.append(
                [
                    f"emit, {e['queue_type']}, vs (a) a connection per row",
                    ">= 50x",
                    fmt_ratio(v),
                    verdict(v["median"], 50.0),
                ]
            )
    work = r.get("work", {}).get("prefetch-1", {}).get("workers", {}).get("1")
    if work:
        v = work["vs_baseline"]
        rows.append(
            [
                "work, 1 worker, prefetch 1, vs minimal pika consumer",
                ">= 0.95x",
                fmt_near(v, 0.95),
                verdict(v["median"], 0.95),
            ]
        )
    fair = r.get("fair", {})
    for name, limit in (("file order, prefetch 1", 1.02), ("longest-first, prefetch 1", 1.05)):
        if name in fair:
            v = fair[name]["vs_reference"]
            ref = "greedy" if fair[name]["reference"] == "greedy" else "LPT"
            rows.append(
                [
                    f"fair dispatch, {name}: makespan vs {ref} schedule",
                    f"<= {limit:.2f}x",
                    fmt_ratio(v),
                    verdict(v["median"], limit, at_most=True),
                ]
            )
    mem = r.get("memory", {})
    if "emit" in mem:
        m = mem["emit"]
        big = m["peak_rss_mb"][1]
        rows.append(
            [
                f"emit peak RSS, {m['rows'][1]:,} rows",
                "<= 60 MB",
                f"{big:.1f} MB",
                verdict(big, 60.0, at_most=True),
            ]
        )
        rows.append(
            [
                f"emit peak RSS flat: {m['rows'][1]:,} rows vs {m['rows'][0]:,}",
                f"<= {FLAT:.2f}x",
                f"{m['growth']:.2f}x",
                verdict(m["growth"], FLAT, at_most=True),
            ]
        )
    if "worker" in mem:
        m = mem["worker"]
        rows.append(
            [
                f"worker RSS after {m['tasks'][1]:,} tasks vs after {m['tasks'][0]:,}",
                "<= 1.20x",
                f"{m['growth']:.2f}x",
                verdict(m["growth"], 1.2, at_most=True),
            ]
        )
    return rows


def emit_section(r: dict[str, Any]) -> list[str]:
    emit = r.get("emit")
    if not emit:
        return []
    out = [
        "## 1. emit throughput",
        "",
        "Rows per second from starting the `emit` process to its exit (reading and checking "
        "the whole file, connecting, publishing, every confirm), against baseline (c), "
        "`bench/baseline_publish.py no-confirm`: one connection, `basic_publish` of the same "
        "bodies, persistent, **no** confirms, timed the same way. Each repetition runs emit "
        "and then the baseline on a fresh queue; the ratio is taken per repetition.",
        "",
    ]
    rows = []
    for e in emit.values():
        if "vs_no_confirm" not in e:
            continue
        rows.append(
            [
                e["queue_type"],
                f"{e['rows']:,}",
                fmt_spread(e["emit"], "/s"),
                fmt_spread(e["no_confirm"], "/s"),
                fmt_ratio(e["vs_no_confirm"]),
                fmt_spread(e["emit_peak_rss_mb"], " MB"),
                lost(e.get("no_confirm_lost")),
            ]
        )
    out += table(
        ["queue", "rows", "emit", "(c) no confirms", "emit / (c)", "emit peak RSS", "(c) lost"],
        rows,
    )
    out += [
        "Emit loses nothing: a row counts only once the broker confirmed it. Baseline (c) "
        "has no such check, so after each run the benchmark counts what reached the queue; "
        "'(c) lost' is the rows minus that count, per repetition.",
        "",
    ]
    out += [
        "The slower baselines run on fewer rows (their rate does not depend on the count), "
        "in the same repetitions as the first size: (a) `per-row-connection`, the tutorial's "
        "`new_task.py` once per row (connect, declare, publish, close); (b) `confirm-each`, "
        "one connection with `BlockingChannel.confirm_delivery()`, so each publish waits for "
        "its confirm.",
        "",
    ]
    rows = []
    for e in emit.values():
        if "vs_confirm_each" not in e:
            continue
        a = e.get("per_row_connection")
        rows.append(
            [
                e["queue_type"],
                fmt_spread(e["emit"], "/s") + f" ({e['rows']:,} rows)",
                (fmt_spread(a, "/s") + f" ({e['per_row_rows']:,} rows)") if a else "not run",
                fmt_ratio(e["vs_per_row_connection"]) if a else "-",
                fmt_spread(e["confirm_each"], "/s") + f" ({e['confirm_each_rows']:,} rows)",
                fmt_ratio(e["vs_confirm_each"]),
            ]
        )
    out += table(
        ["queue", "emit", "(a) connection per row", "emit / (a)", "(b) confirm each", "emit / (b)"],
        rows,
    )
    return out


def fast_path_section(r: dict[str, Any]) -> list[str]:
    """emit with and without its fast path (emitter/fastpath.py)."""
    runs = r.get("emit_fast_path")
    if not runs:
        return []
    out = [
        "### emit with and without its fast path",
        "",
        "The same emit, with the fast path (pre-built frames written below pika's public "
        "API, docs/EMIT.md) and with `EMIT_FAST_PATH=0` (pika's `basic_publish` only), "
        "alternating in each repetition, on a fresh queue each time. emit's CPU seconds "
        "(user + system, the child's rusage) are what the fast path saves, and vary less "
        "than the wall clock on a busy machine.",
        "",
    ]
    rows = [
        [
            e["queue_type"],
            f"{e['rows']:,}",
            fmt_spread(e["fast"], "/s"),
            fmt_spread(e["plain"], "/s"),
            fmt_ratio(e["fast_vs_plain"]),
            fmt_spread(e["fast_cpu"], " s") + " vs " + fmt_spread(e["plain_cpu"], " s"),
            fmt_ratio(e["plain_cpu_vs_fast"]),
        ]
        for e in runs.values()
    ]
    head = ["queue", "rows", "fast path", "EMIT_FAST_PATH=0", "fast / plain"]
    head += ["emit CPU, fast vs plain", "CPU plain / fast"]
    return out + table(head, rows)


def lost(values: list[int] | None) -> str:
    return ", ".join(f"{v:,}" for v in values) if values is not None else "not counted"


def work_section(r: dict[str, Any]) -> list[str]:
    work = r.get("work")
    if not work:
        return []
    out = [
        "## 2. work throughput",
        "",
        f"{work['tasks']:,} zero-dot tasks on a fresh {work['queue_type']} queue, drained by "
        "`work --seconds-per-dot 0 -q` processes (each writes its two log lines per task). "
        "The rate counts the tasks done from the moment the last worker started its first "
        "task to the last `done` line, so process start-up is left out. The baseline, "
        "`bench/baseline_consume.py`, is a pika `BlockingConnection` consumer with the same "
        "prefetch that acks in its callback and logs nothing, timed from its first delivery "
        "to its last ack; it runs before the workers in odd repetitions and after them in "
        "even ones. Broker CPU is the node's CPU time over the run's wall time "
        "(1.00 = one of the machine's cores).",
        "",
    ]
    rows = []
    for key in ("prefetch-1", "prefetch-10"):
        section = work.get(key)
        if not section:
            continue
        for w, s in section["workers"].items():
            rows.append(
                [
                    key.split("-")[1],
                    w,
                    fmt_spread(s["rate"], "/s"),
                    fmt_spread(section["baseline"], "/s"),
                    fmt_ratio(s["vs_baseline"]),
                    cpu(s["broker_cpu"]),
                ]
            )
    out += table(
        ["prefetch", "workers", "work", "baseline (1 consumer)", "work / baseline", "broker CPU"],
        rows,
    )
    return out


def cpu(s: dict[str, Any]) -> str:
    return "not ours" if s["median"] < 0 else f"{s['median']:.2f}"


def scaling_section(r: dict[str, Any]) -> list[str]:
    section = r.get("work", {}).get("prefetch-1")
    if not section:
        return []
    workers = section["workers"]
    counts = sorted(int(w) for w in workers)
    rows = [
        [
            str(w),
            fmt_spread(workers[str(w)]["rate"], "/s"),
            fmt_ratio(workers[str(w)]["vs_one_worker"]),
            cpu(workers[str(w)]["broker_cpu"]),
            cpu(workers[str(w)].get("workers_cpu", {"median": -1})),
        ]
        for w in counts
    ]
    out = [
        "## 5. Scaling",
        "",
        "Total throughput of 1 to 4 workers at prefetch 1 (the runs of section 2).",
        "",
        *table(["workers", "tasks/s", "vs 1 worker", "broker CPU", "workers' CPU"], rows),
    ]
    la = r.get("load_average") or {}
    loads = [la["start"][0], la["end"][0]] if la else []
    out += [scaling_verdict(r.get("machine") or {}, workers, counts, loads), ""]
    return out


def busy_machine(load_avg: list[float], cores: int) -> bool:
    """True when other work kept the machine's cores busy during the run."""
    return bool(load_avg) and bool(cores) and max(load_avg) > cores


def scaling_verdict(
    machine: dict[str, Any],
    workers: dict[str, Any],
    counts: list[int],
    load_avg: list[float] | None = None,
) -> str:
    """Where adding workers stops paying, and what was busy there."""
    load_avg = load_avg or []
    cores = machine.get("cores") or 0
    prev = None
    for w in counts:
        s = workers[str(w)]
        rate = s["rate"]["median"]
        if prev is not None and rate < prev[1] * (1 + SATURATED):
            b = s["broker_cpu"]["median"]
            c = s.get("workers_cpu", {}).get("median", -1)
            head = (
                f"From {prev[0]} to {w} workers the total grows by less than {SATURATED:.0%} "
                f"({fmt_num(prev[1])}/s to {fmt_num(rate)}/s)"
            )
            if b < 0 or c < 0:
                return head + "; the broker's CPU was not measured (not our node)."
            cpu_text = f"the broker used {b:.2f} cores and the workers {c:.2f}, of {cores}"
            if cores and b + c >= 0.85 * cores:
                return (
                    f"{head}: {cpu_text}. The cores are full, and the broker's share "
                    f"({b / (b + c):.0%}) is what more workers cannot add to: on this "
                    f"{cores}-core machine the broker is the limit from {prev[0]} workers on."
                )
            if busy_machine(load_avg, cores):
                return (
                    f"{head}, while {cpu_text}. Other processes kept the machine busy (load "
                    f"average up to {max(load_avg):.1f} on {cores} cores), so the broker and "
                    "the workers got less than the cores: here the limit is CPU the "
                    "benchmark did not get, and the broker's share of it grows with every "
                    "worker. Rerun on a quiet machine to see the broker's own limit."
                )
            return (
                f"{head}, though the cores are not full ({cpu_text}): the limit is the "
                "broker's time per message (each ack waits for the next delivery at "
                "prefetch 1), not CPU."
            )
        prev = (w, rate)
    return (
        f"Throughput still grew by {SATURATED:.0%} or more at every step up to {counts[-1]} "
        "workers: the broker was not yet the limit."
    )


def fair_section(r: dict[str, Any]) -> list[str]:
    fair = r.get("fair")
    if not fair:
        return []
    out = [
        "## 3. Fair dispatch",
        "",
        f"{fair['workers']} workers on `{fair['tasks']}` (20 tasks of 1 to 10 dots) at "
        f"{fair['seconds_per_dot']} s per dot. The makespan is read from the logs with "
        "`inspector/analysis.py` (first `started` to last `done`); the schedules are "
        "computed by `inspector/schedule.py` from each task's measured duration in the same "
        "run: greedy (the best online fair dispatch can do for that order), LPT (greedy on the "
        "longest-first order), the round robin that no prefetch limit gives, and the lower "
        "bound max(sum / workers, longest).",
        "",
    ]
    rows = []
    for name, s in fair.items():
        if not isinstance(s, dict):
            continue
        ref = "greedy" if s["reference"] == "greedy" else "LPT"
        rows.append(
            [
                name,
                fmt_spread(s["makespan"], " s"),
                f"{fmt_ratio(s['vs_reference'])} of {ref}",
                fmt_ratio(s["vs_lower_bound"]),
                fmt_spread(s["greedy"], " s"),
                fmt_spread(s["lpt"], " s"),
                fmt_spread(s["round_robin_schedule"], " s"),
                fmt_spread(s["lower_bound"], " s"),
            ]
        )
    out += table(
        [
            "run",
            "makespan",
            "vs its schedule",
            "vs lower bound",
            "greedy",
            "LPT",
            "round robin",
            "lower bound",
        ],
        rows,
    )
    return out


def memory_section(r: dict[str, Any]) -> list[str]:
    mem = r.get("memory")
    if not mem:
        return []
    e, w = mem["emit"], mem["worker"]
    return [
        "## 4. Memory",
        "",
        f"- `emit` peak RSS (the child's `ru_maxrss`): {e['peak_rss_mb'][0]:.1f} MB on "
        f"{e['rows'][0]:,} rows, {e['peak_rss_mb'][1]:.1f} MB on {e['rows'][1]:,} rows "
        f"({e['growth']:.2f}x; one run each, since peak RSS is not timing noise). The emit "
        "runs of section 1 give it for their sizes too.",
        f"- One `work` process (prefetch {w['prefetch']}), VmRSS read from /proc while it "
        f"runs: {w['rss_mb'][0]:.1f} MB after {w['tasks'][0]:,} tasks, {w['rss_mb'][1]:.1f} "
        f"MB after {w['tasks'][1]:,} ({w['growth']:.2f}x).",
        "",
    ]


def load(r: dict[str, Any]) -> str:
    la = r.get("load_average")
    if not la:
        return ""
    return (
        f" (1-minute load average {la['start'][0]:.1f} at the start, {la['end'][0]:.1f} at "
        "the end: other work on the machine adds noise, which the interleaved ratios absorb "
        "better than the absolute rates)"
    )


def render(r: dict[str, Any], notes: str = "") -> str:
    """The whole page."""
    m = r.get("machine") or {}
    plan = r.get("plan", {})
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench.report` from bench/results/latest.json; "
        "`make bench` rewrites it. Do not edit by hand: edit bench/NOTES.md or bench/report.py. -->",
        "",
        f"Measured {r['date']} by `{r['command']}` in {r['seconds']:.0f} s{load(r)}"
        + (" (**--quick sizes: not a real measurement**)" if r.get("quick") else "")
        + ". Every figure is the median of "
        f"{plan.get('reps', '?')} repetitions ({plan.get('work_reps', plan.get('reps', '?'))} "
        "in the work section) with the min-max in brackets, and every "
        "comparison is a ratio against a baseline measured in the same run, repetition by "
        "repetition.",
        "",
        *table(
            ["machine", ""],
            [
                ["cores", f"{m.get('cores')} ({m.get('cpu') or 'unknown CPU'})"],
                ["memory", f"{m.get('memory_gb')} GB"],
                ["OS", str(m.get("os"))],
                ["RabbitMQ", str(m.get("rabbitmq"))],
                ["Erlang/OTP", str(m.get("erlang"))],
                ["Python", str(m.get("python"))],
                ["pika", str(m.get("pika"))],
            ],
        ),
        "## Targets (issue 7)",
        "",
        *table(["figure", "target", "measured", ""], targets(r)),
        *emit_section(r),
        *fast_path_section(r),
        *work_section(r),
        *fair_section(r),
        *memory_section(r),
        *scaling_section(r),
        *peers_section(r),
        *events_section(r),
        "## Reproduce",
        "",
        "```",
        "make bench                      # the local broker on BROKER_PORT (default 5672)",
        "BROKER_PORT=5740 make bench     # another local node",
        "AMQP_URL=amqp://u:p@host:5672/%2F make bench   # your own RabbitMQ",
        ".venv/bin/python -m bench.run --only emit work # some sections (then bench.report)",
        ".venv/bin/python -m bench.report               # this page from the last results",
        "```",
        "",
        "Sizes and repetitions are in `Plan` in `bench/common.py` and in the results JSON "
        "(`bench/results/latest.json`, not committed). The benchmark never runs inside "
        "`make test`.",
        "",
    ]
    if notes:
        out += [notes.strip(), ""]
    return "\n".join(out)


def main() -> None:
    """Render the results file into docs/BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results", nargs="?", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    r = json.loads(a.results.read_text())
    notes = NOTES.read_text() if NOTES.exists() else ""
    a.out.write_text(render(r, notes))
    print(f"bench: wrote {a.out}")


if __name__ == "__main__":
    main()
