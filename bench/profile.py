"""Where emit and work spend their CPU: py-spy on the real commands, summed by function.

    python -m bench.profile emit [--rows 200000] [--queue-type quorum]
    python -m bench.profile work [--rows 10000] [--prefetch 1]

Needs py-spy (in the dev extra). Prints the functions with the most samples, by own time
(the frame on top of the stack) and by total time (anywhere on the stack), as shares of
all samples. The broker is AMQP_URL, or the local node on BROKER_PORT.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.common import BIN, Admin

RATE = 250  # samples per second


def summarise_profile(collapsed: str, top: int = 15) -> str:
    """Own and total shares per function from py-spy's collapsed ('raw') output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return "no samples"
    out = [f"{samples} samples at {RATE}/s ({samples / RATE:.1f} s of CPU)", "", "own time:"]
    out += [f"  {n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "total time (the function and what it calls):"]
    out += [f"  {n / samples:6.1%}  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    """'publish (emitter/publisher.py:97)' rather than a full site-packages path."""
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    name, path, _line = m.groups()
    path = re.sub(r".*/site-packages/", "", path)
    path = re.sub(r".*/lib/python3\.\d+/", "stdlib/", path)
    path = re.sub(r"^" + re.escape(str(Path.cwd())) + "/", "", path)
    return f"{name} ({path})"


def record(argv: list[str], env: dict[str, str], out: Path) -> None:
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not spy:
        sys.exit("profile: py-spy is missing; run 'make setup' (it is in the dev extra)")
    cmd = [spy, "record", "-r", str(RATE), "-f", "raw", "-o", str(out), "--", *argv]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    """Profile one command and print the summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("command", choices=("emit", "work"))
    ap.add_argument("--rows", type=int)
    ap.add_argument("--queue-type", default="quorum", choices=("quorum", "classic"))
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--top", type=int, default=15, help="how many functions to list")
    a = ap.parse_args()
    port = os.environ.get("BROKER_PORT", "5672")
    url = os.environ.get("AMQP_URL") or f"amqp://guest:guest@localhost:{port}/%2F"
    env = dict(os.environ, AMQP_URL=url)
    rows = a.rows or (200_000 if a.command == "emit" else 10_000)
    queue = f"bench-profile-{a.command}"
    admin = Admin(url)
    admin.delete(queue)
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        csv = Path(tmp) / "rows.csv"
        csv.write_text("".join(f"Task {i}\n" for i in range(1, rows + 1)))
        emit = [str(BIN / "emit"), str(csv), "--queue", queue, "--queue-type", a.queue_type]
        emit += ["-q", "--log-dir", tmp]
        out = Path(tmp) / "profile.txt"
        if a.command == "emit":
            record(emit, env, out)
        else:
            subprocess.run(emit, env=env, check=True, stdout=subprocess.DEVNULL)
            work = [str(BIN / "work"), "--queue", queue, "-q", "--log-dir", tmp]
            work += ["--seconds-per-dot", "0", "--prefetch", str(a.prefetch)]
            record([*work, "--max-tasks", str(rows)], env, out)
        admin.delete(queue)
        admin.close()
        print(f"{a.command} on {rows:,} rows ({a.queue_type} queue)")
        print(summarise_profile(out.read_text(), a.top))


if __name__ == "__main__":
    main()
