"""Reading tasks from a CSV file or stdin, checking every row before anything is sent."""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from utils.errors import BadInput, NothingToDo
from utils.text import plural

#: RabbitMQ's default max_message_size (3.10 and later): 128 MiB.
MAX_BODY_BYTES = 128 * 1024 * 1024
csv.field_size_limit(MAX_BODY_BYTES + 1)


@dataclass(frozen=True)
class CsvOptions:
    """How to turn CSV records into task bodies, and which rows to take."""

    header: bool = False
    column: str | None = None  # a header name, or a 1-based index
    delimiter: str = ","
    encoding: str = "utf-8"
    start_row: int = 1
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One task body with its row number (the n-th non-blank data record) and file line."""

    row: int
    line: int
    body: str


@dataclass
class ReadStats:
    rows: int = 0  # data rows seen, blank lines excluded
    blank: int = 0  # blank lines skipped
    selected: int = 0  # rows inside --start-row/--limit


def open_source(path: str) -> IO[bytes]:
    """Open FILE or '-' (stdin) for reading, turning the usual OS errors into one clear line."""
    if path == "-":
        try:
            # A reader of our own on fd 0: the thread that reads it may be blocked in a read
            # when Ctrl+C ends emit, and Python's shutdown would then wait for sys.stdin's lock
            # ("Fatal Python error: could not acquire lock for <stdin>").
            return open(sys.stdin.fileno(), "rb", closefd=False)
        except (AttributeError, OSError, ValueError):  # a stdin without a file descriptor
            return sys.stdin.buffer
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{path} is a directory, not a CSV file", "give the path of a CSV file")
    try:
        return open(p, "rb")
    except FileNotFoundError:
        raise BadInput(
            f"{path}: no such file", "check the path; 'emit tasks.csv' runs the sample"
        ) from None
    except PermissionError:
        raise BadInput(
            f"{path}: permission denied", "make the file readable (chmod +r) or run as its owner"
        ) from None
    except OSError as exc:
        raise BadInput(
            f"{path}: cannot read it ({exc.strerror})", "check the path and the disk"
        ) from None


def _decoded_lines(raw: IO[bytes] | IO[str], encoding: str) -> Iterator[str]:
    """Decode line by line, so that a bad byte is named by its own line, not by a chunk's."""
    if isinstance(raw, io.TextIOBase):  # already text (tests, callers with a StringIO)
        yield from raw
        return
    enc = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    decode = codecs.getincrementaldecoder(enc)("strict").decode
    for line in raw:
        yield decode(line)  # type: ignore[arg-type]
    tail = decode(b"", True)  # raises on a multi-byte sequence cut off at the end
    if tail:
        yield tail


def iter_rows(
    stream: IO[bytes] | IO[str], name: str, opts: CsvOptions, stats: ReadStats
) -> Iterator[Row]:
    """Yield the selected rows as task bodies; raise BadInput naming FILE:LINE at the first bad one."""
    reader = csv.reader(
        _decoded_lines(stream, opts.encoding), delimiter=opts.delimiter, strict=True
    )
    column_index: int | None = None
    first_line = True
    last = opts.start_row + opts.limit - 1 if opts.limit is not None else None
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{name}:{line}: bytes that are not {opts.encoding} (byte 0x{exc.object[exc.start]:02x})",
                "save the file as UTF-8, or name its encoding with --encoding (e.g. latin-1)",
            ) from None
        except csv.Error as exc:
            raise BadInput(
                f"{name}:{line}: {_csv_problem(exc)}",
                "fix that line of the file; quote fields that contain the delimiter",
            ) from None
        line = reader.line_num
        if first_line:
            first_line = False
            if opts.header:
                column_index = _header_column(record, opts.column, name)
                continue
            if opts.column is not None:
                column_index = _index_column(opts.column, name)
        if not record or (len(record) == 1 and not record[0].strip()):
            stats.blank += 1
            continue
        stats.rows += 1
        n = stats.rows
        for field in record:
            if "\x00" in field:
                raise BadInput(
                    f"{name}:{line}: a NUL byte",
                    "remove the NUL bytes; is this really a text file?",
                )
        if column_index is not None:
            if column_index >= len(record):
                raise BadInput(
                    f"{name}:{line}: has {plural(len(record), 'field')}, no column {column_index + 1}",
                    "fix the row, or choose another --column",
                )
            body = record[column_index]
        else:
            body = " ".join(record)
        if not body.strip():
            raise BadInput(
                f"{name}:{line}: the task body is empty", "remove the row or give it some text"
            )
        if len(body) * 4 > MAX_BODY_BYTES and len(body.encode("utf-8")) > MAX_BODY_BYTES:
            raise BadInput(
                f"{name}:{line}: the body is over the broker's 128 MiB message size limit",
                "split that task up, or send a reference (a path or URL) instead of the data",
            )
        if n < opts.start_row or (last is not None and n > last):
            continue
        stats.selected += 1
        yield Row(n, line, body)


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text or "EOF" in text:
        return "a quote is opened and never closed"
    if "field larger than field limit" in text:
        return "a field is over the broker's 128 MiB message size limit"
    return text


def _header_column(header: list[str], column: str | None, name: str) -> int | None:
    if column is None:
        return None
    if column in header:
        return header.index(column)
    if column.isdecimal():
        return _index_column(column, name)
    raise BadInput(
        f"{name}:1: the header has no column '{column}' (it has: {', '.join(header)})",
        "name one of those columns with --column, or give its 1-based number",
    )


def _index_column(column: str, name: str) -> int:
    if not column.isdecimal() or int(column) < 1:
        raise BadInput(
            f"--column '{column}' is not a column number, and {name} has no header to name it",
            "give a 1-based column number, or add --header if the first line names the columns",
        )
    return int(column) - 1


def validate_file(path: str, opts: CsvOptions) -> ReadStats:
    """Read the whole file once, in constant memory; raise at the first bad row."""
    stats = ReadStats()
    with open_source(path) as stream:
        for _ in iter_rows(stream, path, opts, stats):
            pass
    if stats.rows == 0:
        raise NothingToDo(f"no tasks in {path}", "add rows to the file (one task per row)")
    if stats.selected == 0:
        raise NothingToDo(
            f"no tasks in {path} from row {opts.start_row} on (it has {plural(stats.rows, 'row')})",
            "lower --start-row",
        )
    return stats
