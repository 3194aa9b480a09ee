"""The `tasks` command: observe the queue and the logs.

Each subcommand lives in a module of its own (inspector/cli_*.py); this one gathers them.
"""

from __future__ import annotations

import click

from inspector.cli_dashboard import dashboard
from inspector.cli_dead import dead
from inspector.cli_queue import purge, status
from inspector.cli_report import report, wait


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """See what happened to your tasks: who did which, when, and whether any were lost."""


main.add_command(report)
main.add_command(wait)
main.add_command(status)
main.add_command(purge)
main.add_command(dead)
main.add_command(dashboard)
