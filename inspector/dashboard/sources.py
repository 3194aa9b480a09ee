"""Where the dashboard's events come from: one small interface, and the log folder behind it.

An EventSource hands over the events that arrived since its last poll, as the dicts
utils.logformat.parse_line makes of log lines. LogTail reads logs/ on this machine: the whole
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
from utils.logformat import parse_line

log = logging.getLogger(__name__)

#: Bytes read from one file in one poll; a long history comes over several polls.
READ_CHUNK = 4 * 1024 * 1024


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
        self.unreadable = 0
        self.more = False  # the last poll stopped at READ_CHUNK: poll again at once

    def describe(self) -> dict[str, object]:
        return {
            "kind": "logs",
            "where": f"{self.log_dir}/ on {socket.gethostname()}",
            "files": len(self._tails),
            "unreadable_lines": self.unreadable,
            "note": "workers whose logs are elsewhere (other machines) are not seen",
        }

    def poll(self) -> list[dict[str, str]]:
        events: list[dict[str, str]] = []
        seen: set[tuple[int, int]] = set()
        self.more = False
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
                events.extend(self._read(tail, st.st_size))
        for key in list(self._tails):
            if key not in seen:
                del self._tails[key]  # rotated out of existence
        # Lines from several files: put them in time order (the timestamps are all UTC, to
        # the millisecond, in one format, so they sort as text); a file's own lines keep
        # their order when the times are equal.
        events.sort(key=lambda e: e["ts"])
        return events

    def _read(self, tail: _Tail, size: int) -> list[dict[str, str]]:
        try:
            with open(tail.path, "rb") as f:
                f.seek(tail.offset)
                data = f.read(min(READ_CHUNK, size - tail.offset))
        except OSError as exc:
            log.debug("cannot read %s: %s", tail.path, exc)
            return []
        if tail.offset + len(data) < size:
            self.more = True
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
        return out

    def close(self) -> None:
        self._tails.clear()
