"""The timeline of a run: one lane per worker, one bar per task attempt, as text or a picture.

matplotlib is imported here only, and only when a picture is asked for, so that the
commands start without paying for it.
"""

from __future__ import annotations

import string
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.analysis import RunSummary
from utils.eventlog.records import UNFINISHED, Attempt
from utils.eventlog.schema import DONE, FAILED, REQUEUED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: gid of every task bar, so tests (and anyone) can tell them from other patches.
BAR_GID = "task-bar"
COLOURS = {DONE: "#4c8bd6", FAILED: "#d9534f", REQUEUED: "#999999", UNFINISHED: "#f0ad4e"}


def drawn_end(s: RunSummary, a: Attempt) -> datetime:
    """Where an attempt's bar ends: its end, or for one that never finished (a killed
    worker), the worker's next start or the end of the run."""
    if a.end is not None:
        return a.end
    later = [
        b.start for t in s.tasks for b in t.attempts if b.worker == a.worker and b.start > a.start
    ]
    if later:
        return min(later)
    assert s.start is not None
    return max(a.start, s.start + timedelta(seconds=s.figures.makespan))


#: How the text timeline fills a bar, by how the delivery ended.
TEXT_FILL = {DONE: "=", FAILED: "x", REQUEUED: "~", UNFINISHED: "?"}
#: The words for an ending in the text timeline's key (done and failed: their own names).
ENDINGS = {
    DONE: DONE,
    FAILED: FAILED,
    REQUEUED: "given back by a cold stop",
    UNFINISHED: "cut off (its worker was killed, or its log ends)",
}
#: Letters that stand for bars too short to hold their row number.
KEYS = string.ascii_lowercase + string.ascii_uppercase


def text_timeline(s: RunSummary, width: int = 60) -> str:
    """One line per worker and one bar per delivery, then a key that reads each mark.

    A bar is `|` and its row number, filled with the mark of how it ended. A bar too short
    for its whole row number is a letter instead, named in the key: a row number is never
    cut (a cut "|14" would read as row 1).
    """
    if s.start is None or not s.figures.makespan:
        return "(no finished tasks to draw)"
    scale = width / s.figures.makespan
    name_w = max(len(w.name) for w in s.workers) if s.workers else 6
    lanes: dict[str, list[str]] = {w.name: [" "] * (width + 1) for w in s.workers}
    short: list[str] = []
    # In time order, so that the letters of short bars run left to right.
    bars = sorted(((a, t.row) for t in s.tasks for a in t.attempts), key=lambda b: b[0].start)
    for a, row_no in bars:
        end_s = (drawn_end(s, a) - s.start).total_seconds()
        fill = TEXT_FILL.get(a.outcome, "?")
        lo = min(width, int((a.start - s.start).total_seconds() * scale))
        hi = min(width + 1, max(lo + 1, int(end_s * scale)))
        row = str(row_no) if row_no is not None else "?"
        label = "|" + row
        if hi - lo < len(label) + 1:  # no room for the number and one mark
            key = KEYS[len(short)] if len(short) < len(KEYS) else "*"
            secs = f", {a.seconds:.2f} s" if a.seconds is not None else ""
            short.append(f"{key} = row {row} ({ENDINGS.get(a.outcome, a.outcome)}{secs})")
            label = key
        lanes[a.worker][lo:hi] = list(label.ljust(hi - lo, fill))
    lines = [f"{name:<{name_w}} {''.join(c).rstrip()}" for name, c in lanes.items()]
    pad = " " * (name_w + 1)
    lb = min(width, int(s.figures.lower_bound * scale))
    lines.append(f"{pad}{' ' * lb}^ lower bound {s.figures.lower_bound:.2f} s")
    lines.append(f"{pad}0 s {'-' * max(0, width - 12)} {s.figures.makespan:.2f} s")
    used = sorted({a.outcome for t in s.tasks for a in t.attempts}, key=list(TEXT_FILL).index)
    marks = "; ".join(f"{TEXT_FILL[o]} {ENDINGS[o]}" for o in used if o in TEXT_FILL)
    lines.append(f"{pad}key: |N = a delivery of row N starts; {marks}")
    if short:
        lines += _pack(["short bars:", *short], pad, width + name_w + 1)
    return "\n".join(lines)


def _pack(entries: list[str], pad: str, width: int) -> list[str]:
    """Entries on as few lines as fit in width, never one cut across two lines."""
    out = [pad + entries[0]]
    for e in entries[1:]:
        if len(out[-1]) + len(e) + 2 > width and out[-1].strip() != entries[0]:
            out[-1] += ";"
            out.append(pad + "  " + e)
        else:
            sep = " " if out[-1].strip() == entries[0] else "; "
            out[-1] += sep + e
    return out


def figure(s: RunSummary, title: str = "") -> Figure:
    """A matplotlib Figure of the run (not drawn on any screen; the Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [w.name for w in s.workers]
    lane = {name: i for i, name in enumerate(names)}
    fig = Figure(figsize=(10, 1.2 + 0.6 * max(1, len(names))))
    ax = fig.add_subplot()
    t0 = s.start
    makespan = s.figures.makespan
    for t in s.tasks:
        for a in t.attempts:
            if t0 is None:
                continue
            left = (a.start - t0).total_seconds()
            width = (drawn_end(s, a) - a.start).total_seconds()
            (bar,) = ax.barh(
                lane[a.worker],
                width,
                left=left,
                height=0.6,
                color=COLOURS.get(a.outcome, "#cccccc"),
                edgecolor="black",
                linewidth=0.5,
            )
            bar.set_gid(BAR_GID)
            label = str(t.row) if t.row is not None else "?"
            ax.text(left + width / 2, lane[a.worker], label, ha="center", va="center", fontsize=7)
    if s.figures.lower_bound:
        ax.axvline(s.figures.lower_bound, color="green", linestyle="--", linewidth=1)
        ax.text(
            s.figures.lower_bound,
            -0.5,
            f" lower bound {s.figures.lower_bound:.2f} s",
            color="green",
            fontsize=8,
            va="center",
        )
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_ylim(-0.75, len(names) - 0.5)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first task started")
    ax.set_title(title or f"run {s.run_id}: makespan {makespan:.2f} s", fontsize=10)
    used = sorted({a.outcome for t in s.tasks for a in t.attempts})
    if len(used) > 1:
        ax.legend(
            handles=[Patch(color=COLOURS.get(o, "#cccccc"), label=o) for o in used],
            loc="lower right",
            fontsize=7,
        )
    fig.tight_layout()
    return fig


def save(s: RunSummary, path: Path) -> Figure:
    """Draw the run to path (.png or .svg) and return the figure."""
    fig = figure(s)
    fig.savefig(path, dpi=120)
    return fig


def bar_count(fig: Figure) -> int:
    """How many task bars a figure holds."""
    return sum(1 for ax in fig.axes for p in ax.patches if p.get_gid() == BAR_GID)
