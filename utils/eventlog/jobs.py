"""An --exec attempt's record read back from its done or failed line (schema.JOB_FIELDS).

Every value comes from a log file or the stream, so each is checked: a value that is not
what the worker writes is left out, and `problems` says which, for the reader to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from utils.eventlog.format import read_int

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
#: A results folder as the worker names it: results/<run>/<row>/<attempt>, each part made
#: of letters, digits, _ . - and never . or .. (worker/results.py).
_PART = re.compile(r"[A-Za-z0-9_.-]{1,120}\Z")
_RESULTS_DEPTH = 4
_MAX_INT = 10**15


@dataclass(frozen=True, slots=True)
class JobRecord:
    """How the command ended, and where and what its outputs are."""

    exit_code: int | None = None
    signal: int | None = None
    host: str | None = None
    results: str | None = None  # relative to the log folder the line came from
    stdout_bytes: int | None = None
    stdout_sha256: str | None = None
    stderr_bytes: int | None = None
    stderr_sha256: str | None = None
    truncated: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())


def _count(f: dict[str, str], key: str, bad: list[str]) -> int | None:
    v = f.get(key)
    if v is None:
        return None
    n = read_int(v, _MAX_INT - 1)
    if n is not None and n >= 0:
        return n
    bad.append(f"{key}={v[:20]!r} is not a count")
    return None


def results_folder(value: str) -> bool:
    """True when `value` is a results folder a worker would write (no way out of the log
    folder: relative, no . or .. part)."""
    parts = value.split("/")
    return (
        len(parts) == _RESULTS_DEPTH
        and parts[0] == "results"
        and all(_PART.match(p) and p.strip(".") for p in parts)
    )


def job_record(f: dict[str, str]) -> JobRecord | None:
    """The record on a done or failed line, or None when it has none (not --exec)."""
    if "exit_code" not in f and "signal" not in f and "results" not in f:
        return None
    bad: list[str] = []
    exit_code, sig = _count(f, "exit_code", bad), _count(f, "signal", bad)
    out, err = _count(f, "stdout_bytes", bad), _count(f, "stderr_bytes", bad)
    shas = []
    for key in ("stdout_sha256", "stderr_sha256"):
        v = f.get(key)
        if v is not None and not _SHA256.match(v):
            bad.append(f"{key}={v[:20]!r} is not a sha256")
            v = None
        shas.append(v)
    results = f.get("results")
    if results is not None and not results_folder(results):
        bad.append(f"results={results[:60]!r} is not a results folder")
        results = None
    cut = tuple(p for p in f.get("truncated", "").split(",") if p in ("stdout", "stderr"))
    return JobRecord(
        exit_code, sig, f.get("host"), results, out, shas[0], err, shas[1], cut, tuple(bad)
    )
