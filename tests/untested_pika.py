"""Run one of our commands as if pika were a release nothing of ours was tested with.

    python -m tests.untested_pika emit|work|tasks ARGS...

pika.__version__ is set to UNTESTED before our modules load, so every door to pika's
internals (utils/rabbitmq/internals.py and the two fast paths) finds an untested version
and steps aside to its fallback: the command must still work.
"""

from __future__ import annotations

import sys

import pika

#: A pika version in no TESTED_PIKA.
UNTESTED = "9.9.9"


def main() -> int:
    """Run the command named by the first argument with the rest."""
    pika.__version__ = UNTESTED
    from emitter.cli import main as emit
    from inspector.cli import main as tasks
    from worker.cli import main as work

    command = {"emit": emit, "work": work, "tasks": tasks}[sys.argv[1]]
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    return int(command() or 0)


if __name__ == "__main__":
    sys.exit(main())
