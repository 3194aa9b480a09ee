"""An `--exec` attempt's record and results: its exit status, and its output kept whole.

A command's stdout and stderr are read from two pipes in chunks and streamed to two files
under the log folder as it writes them, so a worker's memory stays flat whatever the size
of the output (docs/WORKER.md, "Results"):

    <log folder>/results/<run>/<row>/<attempt>/stdout
    <log folder>/results/<run>/<row>/<attempt>/stderr

Each file's size and sha256 go in the attempt's done or failed event, with the folder
(relative to the log folder), the exit code or the signal that ended the command, and the
host; `tasks results` reads the files back through those events.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import selectors
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from utils.task import Task

#: The folder under the log folder that holds every run's results.
RESULTS_DIR = "results"
#: How much of a command's output its log line keeps (the end of it), in bytes.
TAIL_BYTES = 2000
#: One read from a command's pipe.
CHUNK = 65536
#: How often a running command is checked for a cancel (a cold stop, a time-out), in seconds.
POLL = 0.1

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def folder_name(text: str) -> str:
    """A run id or task id made safe as one folder name: never empty, never . or .."""
    name = _UNSAFE_NAME.sub("_", text)[:120]
    return name if name.strip(".") else f"_{name}"


@dataclass
class Kept:
    """One of a command's outputs as it arrives: its file (up to the cap), size, sha256, tail."""

    file: IO[bytes] | None
    cap: int | None
    size: int = 0  # bytes kept (in the file, and hashed)
    written: int = 0  # bytes the command wrote
    sha: Any = field(default_factory=hashlib.sha256)
    tail: bytearray = field(default_factory=bytearray)
    error: str = ""  # why the file could not be written, once it could not

    @property
    def truncated(self) -> bool:
        return self.written > self.size and not self.error

    def add(self, chunk: bytes) -> None:
        self.written += len(chunk)
        self.tail += chunk
        if len(self.tail) > 2 * TAIL_BYTES:
            del self.tail[:-TAIL_BYTES]
        keep = chunk if self.cap is None else chunk[: max(0, self.cap - self.size)]
        if not keep or self.error:
            return
        if self.file is not None:
            try:
                self.file.write(keep)
            except OSError as exc:
                self.error = exc.strerror or str(exc)
                return
        self.sha.update(keep)
        self.size += len(keep)

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                self.error = self.error or exc.strerror or str(exc)

    def tail_text(self) -> str:
        return bytes(self.tail[-TAIL_BYTES:]).decode("utf-8", "replace").strip()


@dataclass
class Job:
    """One attempt's record: how the command ended and what it wrote."""

    host: str
    folder: str | None  # relative to the log folder, with / between parts; None: not kept
    stdout: Kept
    stderr: Kept
    exit_code: int | None = None
    signal: int | None = None

    def ended(self, returncode: int) -> None:
        if returncode < 0:
            self.signal = -returncode
        else:
            self.exit_code = returncode

    def why_failed(self) -> str:
        """The failure's reason, or "" when the command succeeded and its output was kept."""
        if self.signal is not None:
            try:
                name = f" ({signal.Signals(self.signal).name})"
            except ValueError:
                name = ""
            return f"command was killed by signal {self.signal}{name}"
        if self.exit_code:
            return f"command exited with code {self.exit_code}"
        error = self.stdout.error or self.stderr.error
        if error:
            return f"could not keep the command's output in {self.folder}: {error}"
        return ""

    def fields(self) -> dict[str, Any]:
        """The record's fields for its done or failed event (schema.JOB_FIELDS)."""
        cut = [n for n, k in (("stdout", self.stdout), ("stderr", self.stderr)) if k.truncated]
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "host": self.host,
            "results": self.folder,
            "stdout_bytes": self.stdout.size,
            "stdout_sha256": self.stdout.sha.hexdigest(),
            "stderr_bytes": self.stderr.size,
            "stderr_sha256": self.stderr.sha.hexdigest(),
            "truncated": ",".join(cut) or None,
        }


@dataclass(frozen=True)
class ResultsStore:
    """Where a worker keeps its commands' results: `log_dir`/results; `max_output` caps
    each file (None keeps everything)."""

    log_dir: Path | None
    max_output: int | None = None

    def open(self, task: Task) -> Job:
        """A new attempt's record, its two files opened in a folder of its own."""
        host = socket.gethostname()
        if self.log_dir is None:
            return Job(host, None, Kept(None, self.max_output), Kept(None, self.max_output))
        run = folder_name(task.run_id or "untracked")
        row = str(task.row) if task.row is not None else folder_name(task.task_id)
        parent = self.log_dir / RESULTS_DIR / run / row
        parent.mkdir(parents=True, exist_ok=True)
        # Two workers sharing a log folder may run the same attempt (a redelivery after a
        # lost connection): the second takes <attempt>.2, and its event names it.
        n = 1
        while True:
            name = str(task.attempt) if n == 1 else f"{task.attempt}.{n}"
            try:
                (parent / name).mkdir()
                break
            except FileExistsError:
                n += 1
        folder = parent / name
        out = Kept(open(folder / "stdout", "wb"), self.max_output)  # noqa: SIM115
        err = Kept(open(folder / "stderr", "wb"), self.max_output)  # noqa: SIM115
        return Job(host, f"{RESULTS_DIR}/{run}/{row}/{name}", out, err)


def run_job(proc: subprocess.Popen[bytes], body: bytes, job: Job, cancel: threading.Event) -> bool:
    """Feed the body to the command's stdin and stream its outputs into the job's files
    until it exits: True, or False once `cancel` is set (the command is then killed)."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
    feeder.start()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, job.stdout)
    sel.register(proc.stderr, selectors.EVENT_READ, job.stderr)
    try:
        while sel.get_map():
            if cancel.is_set():
                kill(proc)
                job.ended(proc.returncode)
                return False
            for key, _ in sel.select(POLL):
                chunk = os.read(key.fd, CHUNK)
                if chunk:
                    key.data.add(chunk)
                else:
                    sel.unregister(key.fileobj)
        while proc.poll() is None:  # it closed its outputs but runs on
            if cancel.wait(POLL):
                kill(proc)
                job.ended(proc.returncode)
                return False
        job.ended(proc.returncode)
        return True
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        job.stdout.close()
        job.stderr.close()


def _feed(stdin: IO[bytes], body: bytes) -> None:
    # A command that does not read its body whole (BrokenPipe) is its own business.
    with contextlib.suppress(OSError):
        stdin.write(body)
    with contextlib.suppress(OSError):
        stdin.close()


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and everything it started (its own session)."""
    try:
        os.killpg(proc.pid, 9)
    except OSError:
        proc.kill()
    proc.wait()
