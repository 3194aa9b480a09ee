"""The event schema holds both sides of the log line (utils/eventlog/schema.py), no broker.

Writers: every call that logs an event in emitter/, worker/ and utils/ names a declared
event by its constant, with declared fields and every required one. Readers: the fold and
the other readers read declared fields only. Nowhere outside schema.py does an event's
name stand as a string. Each check is also run on a planted violation, to show it fails.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from utils.eventlog import fold, schema
from utils.eventlog.format import format_event, parse_line
from utils.eventlog.schema import EVENTS
from utils.task import Task

ROOT = Path(__file__).resolve().parent.parent
#: The packages the rules cover (bench/ and tests/ may name events as they like).
PACKAGES = ("emitter", "worker", "inspector", "utils")
SCHEMA = Path("utils/eventlog/schema.py")
#: Who writes, by folder: a line logged under utils/ (the event stream's) may be either's.
WRITER_OF = {"emitter": {schema.EMIT}, "worker": {schema.WORK}}
#: Calls that log an event: EventLog.event(NAME, **fields), EventLog.defer(NAME, fields),
#: and the emitter's publisher's self._event(NAME, **fields), which emit.py's on_event
#: forwards to EventLog.event with fields of its own (read from that call below).
LOGGING_CALLS = ("event", "defer", "_event")
#: Names that hold a task's ids (Task.ids(): task, row, run) where a call spreads them.
IDS_NAMES = ("ids", "task_ids")
TASK_IDS = frozenset(Task("body", "r-1", 1, "r").ids())
#: Names that hold an event's fields in the readers.
EVENT_DICTS = ("f", "fields")


def py_files(*packages: str) -> Iterator[Path]:
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT)


def parse(path: Path) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), str(path))


# -- writers ------------------------------------------------------------------------------------
@dataclass
class Site:
    """One call that logs an event."""

    where: str
    via: str  # the method called: event, defer or _event
    function: str  # the function it stands in
    events: list[str] | None  # the names it may log (None: not a schema constant)
    fields: set[str]
    unknown: list[str]  # spread fields it cannot tell


def _event_names(node: ast.expr) -> list[str] | None:
    """The event names an expression stands for (a schema constant, ev.X, a ? b : c)."""
    if isinstance(node, ast.IfExp):
        a, b = _event_names(node.body), _event_names(node.orelse)
        return None if a is None or b is None else a + b
    attr = None
    if isinstance(node, ast.Name):
        attr = node.id
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        attr = node.attr
    value = getattr(schema, attr, None) if attr else None
    return [value] if isinstance(value, str) and value in EVENTS else None


def _dict_keys(func: ast.AST, name: str) -> set[str] | None:
    """The keys of the dict display assigned to `name` in func (None: there is none)."""
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return None


def _spread(func: ast.AST, node: ast.expr) -> set[str] | None:
    """The fields a spread dict holds: a dict display built in the function, or task ids."""
    if isinstance(node, ast.Name):
        keys = _dict_keys(func, node.id)
        if keys is not None:
            return keys
        if node.id in IDS_NAMES:
            return set(TASK_IDS)
    return None


def _calls_in(func: ast.FunctionDef) -> Iterator[ast.Call]:
    """The calls in a function's own body (those of functions nested in it are theirs)."""
    todo: list[ast.AST] = list(func.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def writer_sites(path: Path, tree: ast.Module) -> Iterator[Site]:
    """Every logging call in a module, with the event names and fields it passes."""
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for call in _calls_in(func):
            if not (
                isinstance(call.func, ast.Attribute)
                and call.func.attr in LOGGING_CALLS
                and call.args
            ):
                continue
            spreads = [k.value for k in call.keywords if k.arg is None]
            if call.func.attr == "defer" and len(call.args) > 1:
                spreads.append(call.args[1])
            fields = {k.arg for k in call.keywords if k.arg is not None}
            unknown = []
            for node in spreads:
                got = _spread(func, node)
                if got is None:
                    unknown.append(ast.unparse(node))
                else:
                    fields |= got
            yield Site(
                f"{path}:{call.lineno}",
                call.func.attr,
                func.name,
                _event_names(call.args[0]),
                fields,
                unknown,
            )


def _forwarded_fields() -> set[str]:
    """The fields emit.py's on_event adds to what the publisher's self._event() passes."""
    tree = parse(Path("emitter/emit.py"))
    sites = [s for s in writer_sites(Path("emitter/emit.py"), tree) if s.function == "on_event"]
    assert len(sites) == 1 and sites[0].events is None, "on_event forwards to one log.event"
    return sites[0].fields


def check_writers(path: Path, tree: ast.Module, forwarded: set[str]) -> list[str]:
    """What is wrong with the logging calls of one module ([] when nothing is)."""
    out = []
    writers = WRITER_OF.get(path.parts[0], {schema.EMIT, schema.WORK})
    for site in writer_sites(path, tree):
        if site.events is None:
            if not (path == Path("emitter/emit.py") and site.function == "on_event"):
                out.append(f"{site.where}: logs an event that is not a schema constant")
            continue
        if site.unknown:
            out.append(f"{site.where}: cannot tell the fields of **{', **'.join(site.unknown)}")
        fields = site.fields | (forwarded if site.via == "_event" else set())
        for name in site.events:
            event = EVENTS[name]
            if not writers & set(event.writers):
                out.append(f"{site.where}: {name} is declared as written by {event.writers}")
            extra = fields - event.fields
            if extra:
                out.append(f"{site.where}: {name} has undeclared fields {sorted(extra)}")
            lacking = event.required - fields
            if lacking and not site.unknown:
                out.append(f"{site.where}: {name} lacks required fields {sorted(lacking)}")
    return out


def _all_writers() -> list[tuple[Path, ast.Module]]:
    return [(p, parse(p)) for p in py_files("emitter", "worker", "utils") if p != SCHEMA]


def test_every_event_a_writer_logs_is_declared_with_its_fields() -> None:
    forwarded = _forwarded_fields()
    assert forwarded == {"run"}
    problems = [p for path, tree in _all_writers() for p in check_writers(path, tree, forwarded)]
    assert problems == []


def test_every_declared_event_is_logged_somewhere() -> None:
    logged = {
        name
        for path, tree in _all_writers()
        for site in writer_sites(path, tree)
        for name in site.events or ()
    }
    assert set(EVENTS) - logged == set()


def test_a_misspelt_or_missing_field_at_a_writer_fails_the_check() -> None:
    planted = textwrap.dedent(
        """
        def run(log, task):
            ids = task.ids()
            log.event(STARTED, worker="w", **ids, dots=0, atempt=1, redelivered=False, body="")
            log.event(ev.DONE, worker="w", **ids, seconds=0.1)
            log.event("done", worker="w")
            log.event(EMIT_DONE, run="r")
        """
    )
    problems = check_writers(Path("worker/planted.py"), ast.parse(planted), {"run"})
    text = "\n".join(problems)
    assert "started has undeclared fields ['atempt']" in text
    assert "started lacks required fields ['attempt']" in text
    assert "done lacks required fields ['attempt']" in text
    assert "logs an event that is not a schema constant" in text
    assert "emit_done is declared as written by ('emit',)" in text


# -- no event-name literals ---------------------------------------------------------------------
def literal_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """String constants that are an event's name, outside what names output fields: the
    keys of a dict display (the report's and the dashboard's JSON) and the items of a
    *_COLUMNS list (the report's CSV), which must not follow a renamed event."""
    exempt: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            exempt |= {id(k) for k in node.keys if k is not None}
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.List | ast.Tuple)
            and any(isinstance(t, ast.Name) and t.id.endswith("_COLUMNS") for t in node.targets)
        ):
            exempt |= {id(e) for e in node.value.elts}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in EVENTS
            and id(node) not in exempt
        ):
            yield node.lineno, node.value


def test_no_event_name_stands_as_a_string_outside_the_schema() -> None:
    found = [
        f"{path}:{line}: {name!r}"
        for path in py_files(*PACKAGES)
        if path != SCHEMA
        for line, name in literal_names(parse(path))
    ]
    assert found == []


def test_a_planted_event_name_literal_is_found() -> None:
    planted = 'JSON = {"done": 1}\nCSV_COLUMNS = ["done"]\nif ev == "requeued":\n    pass\n'
    assert list(literal_names(ast.parse(planted))) == [(3, "requeued")]


# -- readers ------------------------------------------------------------------------------------
def field_reads(tree: ast.AST, names: tuple[str, ...] = EVENT_DICTS) -> Iterator[tuple[int, str]]:
    """Constant keys read from an event's fields: f.get("k"), f["k"], "k" in f, and the
    terminal's get("k"); also a run's emit fields, run.emitted.get("k") and the like."""

    def is_event(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in names
        return isinstance(node, ast.Attribute) and node.attr == "emitted"

    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and node.args:
            fn = node.func
            method = isinstance(fn, ast.Attribute) and fn.attr == "get" and is_event(fn.value)
            if method or (isinstance(fn, ast.Name) and fn.id == "get"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and is_event(node.value):
            key = node.slice
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and is_event(node.comparators[0])
        ):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield node.lineno, key.value


def _handler_reads(handler: object) -> set[str]:
    source = textwrap.dedent(inspect.getsource(handler))  # type: ignore[arg-type]
    return {k for _line, k in field_reads(ast.parse(source))}


def test_each_fold_handler_reads_only_the_fields_its_events_declare() -> None:
    by_handler: dict[object, set[str]] = {}
    for name, handler in fold.HANDLERS.items():
        by_handler.setdefault(handler, set()).add(name)
    problems = []
    for handler, names in by_handler.items():
        declared = set(schema.LINE_FIELDS).union(*(EVENTS[n].fields for n in names))
        for key in sorted(_handler_reads(handler) - declared):
            problems.append(f"{handler.__qualname__} reads {key}, which {sorted(names)} lack")  # type: ignore[attr-defined]
    assert problems == []


def test_every_reader_reads_only_declared_fields() -> None:
    readers = [
        *py_files("inspector", "utils/eventlog"),
        Path("worker/terminal.py"),
        Path("emitter/emit.py"),
    ]
    declared = schema.field_names() | set(EVENTS)  # run.emitted also holds emit lines' times
    found = [
        f"{path}:{line}: {key}"
        for path in readers
        for line, key in field_reads(parse(path))
        if key not in declared
    ]
    assert found == []


def test_a_misspelt_field_read_is_found() -> None:
    planted = (
        'def h(f):\n    return f.get("secnds"), f["task"], "reason" in f, run.emitted["rows"]\n'
    )
    reads = {k for _line, k in field_reads(ast.parse(planted))}
    assert reads == {"secnds", "task", "reason", "rows"}
    assert reads - schema.field_names() == {"secnds"}


# -- the table itself ---------------------------------------------------------------------------
def test_the_table_declares_kinds_and_writers_it_knows() -> None:
    for event in EVENTS.values():
        assert set(event.writers) <= {schema.EMIT, schema.WORK}, event.name
        assert event.required <= event.fields and event.doc, event.name
        for kind in event.kinds.values():
            assert kind.rstrip("?") in schema.KINDS, (event.name, kind)


def test_a_written_line_passes_its_declaration_and_a_renamed_field_does_not() -> None:
    ids = {"worker": "w1", "task": "r-3", "row": 3, "run": "r"}
    line = format_event(
        schema.STARTED, **ids, dots=2, attempt=1, redelivered=False, body="Task 3 .."
    )
    fields = parse_line(line)
    assert fields is not None and schema.problems(fields) == []
    renamed = parse_line(line.replace(" attempt=", " try="))
    assert renamed is not None
    assert schema.problems(renamed) == [
        "started: lacks attempt",
        "started: try is not one of its fields",
    ]
    bad = parse_line(line.replace("row=3", "row=three"))
    assert bad is not None and schema.problems(bad) == ["started: row='three' is not int"]


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_declares_the_fields_a_reader_keys_on(name: str) -> None:
    # A task's events carry the task; a worker's its name (the fold keys on both).
    event = EVENTS[name]
    if schema.WORK in event.writers and schema.EMIT not in event.writers:
        assert "worker" in event.required or name in (
            schema.EVENTS_OFF,
            schema.EVENTS_UNSENT,
            schema.EVENTS_DROPPED,
        )
