"""Pure helpers for `make bench`: medians, ranges, ratios and how they are printed."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of some repetitions, keeping the values themselves."""
    if not values:
        raise ValueError("no values to summarise")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def ratios(ours: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Per-repetition ratios ours[i] / base[i] (runs interleaved, so noise hits both alike)."""
    if len(ours) != len(base):
        raise ValueError(f"{len(ours)} measurements against {len(base)} baselines")
    if any(b <= 0 for b in base):
        raise ValueError("a baseline of zero cannot be divided by")
    return spread([o / b for o, b in zip(ours, base, strict=True)])


def rate(count: int, seconds: float) -> float:
    """Items per second; 0 when nothing was timed."""
    return count / seconds if seconds > 0 else 0.0


def fmt_num(x: float) -> str:
    """A rate or size the way the report prints it: thousands separated, no needless digits."""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_spread(s: dict[str, Any], unit: str = "") -> str:
    """'11,035/s (10,870-11,200)': the median, then min-max in brackets."""
    return f"{fmt_num(s['median'])}{unit} ({fmt_num(s['min'])}-{fmt_num(s['max'])})"


def fmt_ratio(s: dict[str, Any]) -> str:
    """'0.52x (0.49-0.55)'."""
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def verdict(value: float, target: float, at_most: bool = False) -> str:
    """'met' or 'missed' for a figure against its target (at least, or at most, target)."""
    ok = value <= target if at_most else value >= target
    return "met" if ok else "missed"
