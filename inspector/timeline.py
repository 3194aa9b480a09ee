"""The Gantt chart of a run: one lane per worker, one bar per task attempt.

matplotlib is imported here only, and only when a picture is asked for, so that `emit`
and `work` start without paying for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from inspector.report import Summary, drawn_end

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: gid of every task bar, so tests (and anyone) can tell them from other patches.
BAR_GID = "task-bar"
COLOURS = {"done": "#4c8bd6", "failed": "#d9534f", "requeued": "#999999", "unfinished": "#f0ad4e"}


def figure(s: Summary, title: str = "") -> Figure:
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


def save(s: Summary, path: Path) -> Figure:
    """Draw the run to path (.png or .svg) and return the figure."""
    fig = figure(s)
    fig.savefig(path, dpi=120)
    return fig


def bar_count(fig: Figure) -> int:
    """How many task bars a figure holds."""
    return sum(1 for ax in fig.axes for p in ax.patches if p.get_gid() == BAR_GID)
