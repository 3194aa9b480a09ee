"""What a worker does with one task: the tutorial's dot-sleep, or a real command."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from utils.task import Task
from worker.results import Job, ResultsStore, run_job

#: Our own settings, never handed to a command: the broker URL (password included), and
#: every TASK_* / TASKS_* setting (the management URL, the TLS files, the dashboard's token).
OUR_SETTINGS = ("AMQP_URL", "EMIT_FAST_PATH", "WORK_FAST_ACK", "SECONDS_PER_DOT")
OUR_PREFIXES = ("TASK_", "TASKS_")
#: Linux takes at most this many bytes for one "NAME=value" string (MAX_ARG_STRLEN,
#: 32 pages); a longer TASK_BODY would make the exec fail with E2BIG.
MAX_ENV_BYTES = 131072


class TaskFailed(Exception):
    """The task did not succeed; the message says why, in a few words."""

    def __init__(self, reason: str, output: str = "", job: Job | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.output = output
        self.job = job  # an --exec attempt's record


class Cancelled(Exception):
    """The worker asked the task to stop (a cold stop or a time-out)."""

    def __init__(self, job: Job | None = None) -> None:
        super().__init__()
        self.job = job


class Output(str):
    """What a handler returns for the log, with an --exec attempt's record."""

    job: Job | None

    def __new__(cls, text: str, job: Job | None) -> Output:
        out = super().__new__(cls, text)
        out.job = job
        return out


#: A handler runs one task in a worker thread. It returns text for the log (or ""),
#: raises TaskFailed (or anything else) when the task fails, and should return soon
#: after `cancel` is set.
Handler = Callable[[Task, threading.Event], str]


@dataclass(frozen=True)
class DotSleep:
    """The tutorial's fake work: sleep seconds_per_dot for every '.' in the body."""

    seconds_per_dot: float = 1.0

    def is_instant(self, task: Task) -> bool:
        """True when the task takes no time at all, so the worker need not hand it over."""
        return task.dots == 0 or self.seconds_per_dot == 0

    def __call__(self, task: Task, cancel: threading.Event) -> str:
        if cancel.wait(task.dots * self.seconds_per_dot):
            raise Cancelled()
        return ""


@dataclass(frozen=True)
class RunCommand:
    """Run a command for each task: the body on stdin and in TASK_BODY; exit 0 means done.

    Its stdout and stderr are streamed apart into `results` (worker/results.py)."""

    command: str
    shell: bool = False
    results: ResultsStore = field(default_factory=lambda: ResultsStore(None))

    def argv(self) -> list[str] | str:
        return self.command if self.shell else shlex.split(self.command)

    def __call__(self, task: Task, cancel: threading.Event) -> str:
        env = child_environment(os.environ, task)
        try:
            job = self.results.open(task)
        except OSError as exc:
            raise TaskFailed(
                f"could not keep the command's output: {exc.strerror or exc}"
            ) from None
        try:
            proc = subprocess.Popen(
                self.argv(),
                shell=self.shell,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            job.stdout.close()
            job.stderr.close()
            raise TaskFailed(f"could not run the command: {exc.strerror or exc}") from None
        if not run_job(proc, task.body.encode("utf-8", "surrogatepass"), job, cancel):
            raise Cancelled(job)
        reason = job.why_failed()
        if reason:
            raise TaskFailed(reason, job.stderr.tail_text() or job.stdout.tail_text(), job)
        return Output(job.stdout.tail_text(), job)


def child_environment(environ: Mapping[str, str], task: Task) -> dict[str, str]:
    """What a command runs with: the worker's environment without our settings and secrets,
    plus the task's own TASK_ID, TASK_ROW, TASK_ATTEMPT and TASK_BODY (docs/WORKER.md).

    A body that cannot be an environment variable (over MAX_ENV_BYTES, or holding a NUL)
    is left out of it: TASK_BODY_BYTES then gives its size, and stdin has it whole.
    """
    env = {
        k: v for k, v in environ.items() if k not in OUR_SETTINGS and not k.startswith(OUR_PREFIXES)
    }
    env.update(
        TASK_ID=task.task_id,
        TASK_ROW="" if task.row is None else str(task.row),
        TASK_ATTEMPT=str(task.attempt),
    )
    size = len(task.body.encode("utf-8", "surrogatepass"))
    if len("TASK_BODY=") + size + 1 <= MAX_ENV_BYTES and "\0" not in task.body:
        env["TASK_BODY"] = task.body
    else:
        env["TASK_BODY_BYTES"] = str(size)
    return env
