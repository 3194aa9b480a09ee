"""Where the dashboard's events come from: one small interface, and the log folder behind it.

An EventSource hands over the events that arrived since its last poll, as the dicts
utils/eventlog/format.py's parse_line makes of log lines. LogTail reads logs/ on this machine: the whole
history first, then each line as it is appended. The broker's event stream (`<queue>.events`)
plugs in as another EventSource; docs/DASHBOARD.md says how.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inspector.runs import log_files
from utils.eventlog.format import parse_line

log = logging.getLogger(__name__)

#: Bytes read in one poll, shared out among the files that have something new; a long
#: history comes over several polls, so that what is held at once stays small.
READ_BUDGET = 1024 * 1024
#: A file gets at least this much of the budget.
READ_MIN = 64 * 1024


class EventSource(Protocol):
    """Anything that yields the events that arrived since it was last asked."""

    def poll(self) -> list[dict[str, str]]:
        """The new events, oldest first; [] when there are none. Must not block for long."""
        ...

    def describe(self) -> dict[str, object]:
        """What the page says about where the events come from (kind, where, notes)."""
        ...

    def close(self) -> None:
        """Let go of files or connections."""
        ...


@dataclass
class _Tail:
    """How far one file (known by its inode, so a rotated file keeps its place) was read."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    last_ts: str = ""  # the time of the last line read from it


class LogTail:
    """The log folder, tailed: every *.log and rotated *.log.N, new lines as they come.

    Files are followed by inode: when a log rotates (x.log becomes x.log.1), what was left
    of it is read from its new name, and the new x.log from its start. A file that shrinks
    was truncated and is read again from its start. A line is used once its newline is
    written, so a line caught mid-write is never cut in two.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._tails: dict[tuple[int, int], _Tail] = {}
        self._held: list[dict[str, str]] = []  # read, but later than what a file has left
        self.unreadable = 0
        self.more = False  # the last poll left something unread: poll again at once

    def describe(self) -> dict[str, object]:
        return {
            "kind": "logs",
            "where": f"{self.log_dir}/ on {socket.gethostname()}",
            "files": len(self._tails),
            "unreadable_lines": self.unreadable,
            "note": "workers whose logs are elsewhere (other machines) are not seen",
        }

    def poll(self) -> list[dict[str, str]]:
        grown: list[tuple[_Tail, int]] = []
        seen: set[tuple[int, int]] = set()
        try:
            files = log_files(self.log_dir) if self.log_dir.is_dir() else []
        except OSError as exc:
            log.debug("cannot list %s: %s", self.log_dir, exc)
            files = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue  # rotated or removed between the listing and now
            key = (st.st_dev, st.st_ino)
            seen.add(key)
            tail = self._tails.get(key)
            if tail is None:
                tail = self._tails[key] = _Tail(path)
            tail.path = path
            if st.st_size < tail.offset:  # truncated, or a new file on a reused inode
                tail.offset, tail.partial = 0, b""
            if st.st_size > tail.offset:
                grown.append((tail, st.st_size))
        for key in list(self._tails):
            if key not in seen:
                del self._tails[key]  # rotated out of existence
        share = max(READ_MIN, READ_BUDGET // max(1, len(grown)))
        events, self._held = self._held, []
        behind: list[_Tail] = []  # files with more to read than this poll's share
        for tail, size in grown:
            events.extend(self._read(tail, size, share))
            if tail.offset < size:
                behind.append(tail)
        self.more = bool(behind)
        # Lines from several files, in time order (the timestamps are all UTC, to the
        # millisecond, in one format, so they sort as text; a file's own lines keep their
        # order when the times are equal). While a file has more to read, the lines later
        # than its last one read wait for the next poll: history is folded in time order.
        events.sort(key=lambda e: e["ts"])
        if behind:
            mark = min(t.last_ts for t in behind)
            cut = next((i for i, e in enumerate(events) if e["ts"] > mark), len(events))
            events, self._held = events[:cut], events[cut:]
        return events

    def _read(self, tail: _Tail, size: int, limit: int) -> list[dict[str, str]]:
        try:
            with open(tail.path, "rb") as f:
                f.seek(tail.offset)
                data = f.read(min(limit, size - tail.offset))
        except OSError as exc:
            log.debug("cannot read %s: %s", tail.path, exc)
            return []
        tail.offset += len(data)
        data = tail.partial + data
        cut = data.rfind(b"\n") + 1
        tail.partial = data[cut:]
        out = []
        for raw in data[:cut].split(b"\n"):
            if not raw.strip():
                continue
            fields = parse_line(raw.decode("utf-8", "replace").replace("\x00", ""))
            if fields is None:
                self.unreadable += 1
                continue
            out.append(fields)
        if out:
            tail.last_ts = out[-1]["ts"]
        return out

    def close(self) -> None:
        self._tails.clear()
        self._held = []
