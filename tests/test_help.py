"""--help says which setting is in effect: the default, or the environment variable that wins."""

from __future__ import annotations

import os

import pytest

from tests.helpers import ROOT, run


def help_text(*args: str, **environ: str) -> str:
    """The command's --help with only the given TASK_/AMQP_ variables set, on one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASK_", "AMQP_"))}
    env = {k: v for k, v in env.items() if k not in ("SECONDS_PER_DOT", "EMIT_FAST_PATH")}
    r = run(*args, "--help", env={**env, "PWD": str(ROOT), **environ})
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())  # click wraps the help; compare it as one line


@pytest.mark.parametrize(
    "command", [("work",), ("emit",), ("tasks", "status"), ("tasks", "dashboard")]
)
def test_help_names_each_variable_and_the_default_when_none_is_set(command):
    text = help_text(*command)
    assert "[env var: AMQP_URL; default: amqp://guest:guest@localhost:5672/%2F]" in text
    assert "[env var: TASK_QUEUE; default: task_queue]" in text
    assert "[env var: TASK_CA_CERT]" in text


@pytest.mark.parametrize(
    "command", [("work",), ("emit",), ("tasks", "status"), ("tasks", "dashboard")]
)
def test_help_shows_a_set_variable_as_the_value_in_effect_with_its_password_masked(command):
    text = help_text(
        *command,
        AMQP_URL="amqp://bob:s3cret@rabbit.example:5673/%2F",
        TASK_QUEUE="jobs",
        TASK_LOG_DIR="/var/log/tasks",
    )
    # click breaks a word longer than its column, such as a URL: compare without spaces.
    squeezed = text.replace(" ", "")
    assert "envvar:AMQP_URL=amqp://bob:***@rabbit.example:5673/%2F,ineffect;" in squeezed
    assert "s3cret" not in text
    assert "[env var: TASK_QUEUE=jobs, in effect; default: task_queue]" in text
    assert "[env var: TASK_LOG_DIR=/var/log/tasks, in effect; default: logs]" in text


def test_help_shows_the_commands_own_variables_in_effect_too():
    work = help_text("work", SECONDS_PER_DOT="0.5")
    assert "[env var: SECONDS_PER_DOT=0.5, in effect; default: 1.0; x>=0]" in work
    emit = help_text("emit", EMIT_FAST_PATH="0")
    assert "env var: EMIT_FAST_PATH=0, in effect; default: fast-path" in emit
    status = help_text("tasks", "status", TASK_MANAGEMENT_URL="http://ops:pw@h:15672/")
    dashboard = help_text("tasks", "dashboard", TASK_DASHBOARD_PORT="9000")
    assert "[env var: TASK_DASHBOARD_PORT=9000, in effect; default: 8765; 0<=x<=65535]" in dashboard
    squeezed = status.replace(" ", "")
    assert "envvar:TASK_MANAGEMENT_URL=http://ops:***@h:15672/,ineffect" in squeezed
    assert ":pw@" not in status
