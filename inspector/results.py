"""`--exec` results read back: each attempt's record as JSON, and the stored outputs that
`tasks results` prints (docs/WORKER.md, "Results")."""

from __future__ import annotations

from typing import Any

from utils.eventlog.jobs import JobRecord


def job_json(job: JobRecord | None) -> dict[str, Any]:
    """An attempt's record for --json: exit_code, signal, host and its results (or None)."""
    if job is None:
        return {"exit_code": None, "signal": None, "host": None, "results": None}
    return {
        "exit_code": job.exit_code,
        "signal": job.signal,
        "host": job.host,
        "results": None
        if job.results is None
        else {
            "folder": job.results,
            "stdout_bytes": job.stdout_bytes,
            "stdout_sha256": job.stdout_sha256,
            "stderr_bytes": job.stderr_bytes,
            "stderr_sha256": job.stderr_sha256,
            "truncated": list(job.truncated),
        },
    }
