"""Rows as ranges: what a run's manifest claims costs memory by its ranges, not its rows.

An emit line says `rows=1-20000000`; a report that listed every row not seen done would
hold 2*10^7 ints for one line anyone could write (issue 23). A RowSet holds sorted,
disjoint, inclusive spans, so its size follows the rows that actually appear in events.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator


class RowSet:
    """Sorted, disjoint, inclusive spans of row numbers; reads like a sorted list of rows."""

    __slots__ = ("_firsts", "spans")

    def __init__(self, spans: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[tuple[int, int]] = []
        for a, b in sorted(spans):
            if a > b:
                continue
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        #: The spans, (first, last) each, ascending and apart.
        self.spans: tuple[tuple[int, int], ...] = tuple(merged)
        self._firsts = [a for a, _b in merged]

    @classmethod
    def of(cls, rows: Iterable[int]) -> RowSet:
        """The rows given (any order, repeats allowed)."""
        return cls((r, r) for r in rows)

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in self.spans)

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __iter__(self) -> Iterator[int]:
        return itertools.chain.from_iterable(range(a, b + 1) for a, b in self.spans)

    def __contains__(self, row: object) -> bool:
        if not isinstance(row, int):
            return False
        i = bisect.bisect_right(self._firsts, row) - 1
        return i >= 0 and row <= self.spans[i][1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowSet):
            return self.spans == other.spans
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RowSet({self.text()})"

    def without(self, rows: Iterable[int | None]) -> RowSet:
        """These rows less the given ones: the cost follows the rows given."""
        out: list[tuple[int, int]] = []
        cut = sorted({r for r in rows if r is not None and r in self})
        i = 0
        for a, b in self.spans:
            start = a
            while i < len(cut) and cut[i] <= b:
                if cut[i] > start:
                    out.append((start, cut[i] - 1))
                start = cut[i] + 1
                i += 1
            if start <= b:
                out.append((start, b))
        return RowSet(out)

    def head(self, n: int) -> RowSet:
        """The first n rows."""
        out = []
        for a, b in self.spans:
            if n <= 0:
                break
            last = min(b, a + n - 1)
            out.append((a, last))
            n -= last - a + 1
        return RowSet(out)

    def first(self, n: int) -> list[int]:
        """The first n rows, as a list."""
        return list(itertools.islice(self, max(n, 0)))

    def text(self, limit: int | None = None) -> str:
        """'1-4, 6, 9-20000000': each span, the first `limit` spans then ', …'."""
        shown = self.spans if limit is None else self.spans[:limit]
        text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in shown)
        return text + (", …" if len(shown) < len(self.spans) else "")
