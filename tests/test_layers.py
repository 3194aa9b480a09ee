"""The house rules, read from the code's syntax trees (docs/DESIGN.md, "The rooms").

The rules cover the production packages, emitter/, worker/, inspector/ and utils/ (bench/ and
tests/ may import pika and name events). Each rule is a function from a tree's root to the
places that break it, "path:line: what"; each runs once over this repository, which must
have none, and once over a small tree planted in tmp_path with one violation, which it
must find (so that no rule can pass by looking at nothing).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from utils.eventlog.schema import EVENTS

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("emitter", "worker", "inspector")
PACKAGES = (*COMMANDS, "utils")

#: Where pika may be imported: its wing, the task's own messages, and the two fast paths.
PIKA_FILES = ("utils/task.py", "emitter/fastpath.py", "worker/fastack.py")
PIKA_DIRS = ("utils/rabbitmq/",)
#: Where pika's privates may be touched: the one door for them, and the two fast paths.
PRIVATE_FILES = ("utils/rabbitmq/internals.py", "emitter/fastpath.py", "worker/fastack.py")
#: Where click may be imported, besides any */cli*.py.
CLICK_FILES = ("utils/cli.py",)
SCHEMA = "utils/eventlog/schema.py"
MAX_FILE_LINES = 500
MAX_BODY_LINES = 80

Rule = Callable[[Path], list[str]]


# -- reading a tree ----------------------------------------------------------------------------
@functools.cache
def sources(root: Path) -> tuple[tuple[str, ast.Module, str], ...]:
    """Every production .py file below root: its path from root, its tree, its text."""
    return tuple(
        (path.relative_to(root).as_posix(), ast.parse(text, str(path)), text)
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        if (text := path.read_text(encoding="utf-8")) is not None
    )


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) for every import, with `from a import b` giving both a and a.b."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def top(name: str) -> str:
    """The package of a module ("worker.loop") or of a path ("worker/loop.py")."""
    return name.replace("/", ".").split(".")[0]


def within(path: str, files: tuple[str, ...], dirs: tuple[str, ...] = ()) -> bool:
    return path in files or path.startswith(dirs)


# -- the rules ---------------------------------------------------------------------------------
def utils_imports_no_command(root: Path) -> list[str]:
    """utils/ serves the commands: it never imports one (nor bench/ or tests/)."""
    return sorted(
        {
            f"{path}:{line}: utils imports {top(module)}"
            for path, tree, _ in sources(root)
            if path.startswith("utils/")
            for line, module in imported(tree)
            if top(module) in (*COMMANDS, "bench", "tests")
        }
    )


#: utils/ in floors, each importing only its own and those below: the plain modules, then
#: the rabbitmq wing, then the eventlog wing (its stream publishes through rabbitmq), then the
#: command line's shared options (any other module of utils/).
FLOORS = (
    ("utils.settings", "utils.errors", "utils.task", "utils.text", "utils.rowset"),
    ("utils.rabbitmq",),
    ("utils.eventlog",),
)


def floor(module: str) -> int:
    """The floor of a module of utils ("utils.rabbitmq.queues") or a path below utils/."""
    name = module.removesuffix(".py").replace("/", ".")
    for level, prefixes in enumerate(FLOORS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    return len(FLOORS)


def utils_imports_down(root: Path) -> list[str]:
    """Within utils/, imports go down the floors: the rabbitmq wing never imports eventlog
    or the command line's options, the plain modules import neither wing."""
    return sorted(
        {
            f"{path}:{line}: imports {'.'.join(module.split('.')[:2])}, a floor above it"
            for path, tree, _ in sources(root)
            if path.startswith("utils/")
            for line, module in imported(tree)
            if top(module) == "utils" and module != "utils" and floor(module) > floor(path)
        }
    )


def commands_import_not_each_other(root: Path) -> list[str]:
    """emit, work and tasks share utils/ only: no command package imports another."""
    return sorted(
        {
            f"{path}:{line}: {top(path)} imports {top(module)}"
            for path, tree, _ in sources(root)
            if top(path) in COMMANDS
            for line, module in imported(tree)
            if top(module) in COMMANDS and top(module) != top(path)
        }
    )


def pika_behind_its_door(root: Path) -> list[str]:
    """pika is imported only in utils/rabbitmq/, utils/task.py and the two fast paths."""
    return sorted(
        {
            f"{path}:{line}: imports pika"
            for path, tree, _ in sources(root)
            if not within(path, PIKA_FILES, PIKA_DIRS)
            for line, module in imported(tree)
            if top(module) == "pika"
        }
    )


def pika_exceptions_in_rabbitmq(root: Path) -> list[str]:
    """pika's exceptions are translated into ours in utils/rabbitmq/ and named nowhere else."""
    out = set()
    for path, tree, _ in sources(root):
        if path.startswith(PIKA_DIRS):
            continue
        out |= {
            f"{path}:{line}: imports pika.exceptions"
            for line, module in imported(tree)
            if module == "pika.exceptions" or module.startswith("pika.exceptions.")
        }
        out |= {
            f"{path}:{node.lineno}: uses pika.exceptions"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "exceptions"
            and isinstance(node.value, ast.Name)
            and node.value.id == "pika"
        }
    return sorted(out)


@functools.cache
def pika_privates() -> frozenset[str]:
    """Every private name pika's own source defines or assigns (`_impl`, `_closing_reason`...)."""
    names: set[str] = set()
    for path in Path(pika.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


def own_privates(trees: list[ast.Module]) -> frozenset[str]:
    """The private names our own code defines: `obj._x` with one of them is not pika's."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)  # a dataclass field
    return frozenset(names)


def pika_privates_behind_their_door(root: Path) -> list[str]:
    """`x._name` with a name private to pika only in utils/rabbitmq/internals.py and the
    fast paths (internals.py checks each at start-up and gates it on the tested version)."""
    files = list(sources(root))
    theirs = pika_privates() - own_privates([tree for _, tree, _ in files])
    return [
        f"{path}:{node.lineno}: touches pika's {node.attr}"
        for path, tree, _ in files
        if not within(path, PRIVATE_FILES)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in theirs
    ]


def click_in_cli_only(root: Path) -> list[str]:
    """click is imported only in */cli*.py and utils/cli.py: the rest is plain Python."""
    return sorted(
        {
            f"{path}:{line}: imports click"
            for path, tree, _ in sources(root)
            if not (Path(path).name.startswith("cli") or path in CLICK_FILES)
            for line, module in imported(tree)
            if top(module) == "click"
        }
    )


def exempt(tree: ast.Module, events: frozenset[str]) -> set[int]:
    """The ids of the string nodes that are prose or field names, not event names: every
    docstring, and the keys of a record (a dict display) or the columns of a table (a list or
    tuple of strings) in which some other string is no event: `"done": counts.done` in a JSON
    record counts done tasks. A collection made of event names alone is a set of events."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
        items: list[ast.expr | None] = []
        if isinstance(node, ast.Dict):
            items = list(node.keys)
        elif isinstance(node, ast.List | ast.Tuple):
            items = list(node.elts)
        strings = [k for k in items if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        if any(k.value not in events for k in strings):
            out |= {id(k) for k in strings}
    return out


def event_names_from_schema(root: Path, events: frozenset[str] = frozenset(EVENTS)) -> list[str]:
    """No string that is an event's name outside utils/eventlog/schema.py: code names an event
    by schema's constant, so that a renamed event breaks at import, not in a reader."""
    out = []
    for path, tree, _ in sources(root):
        if path == SCHEMA:
            continue
        fields = exempt(tree, events)
        out += [
            f"{path}:{node.lineno}: the event name {node.value!r} as a literal"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in events
            and id(node) not in fields
        ]
    return out


def files_short(root: Path) -> list[str]:
    """No production file over 500 lines."""
    return [
        f"{path}: {n} lines"
        for path, _, text in sources(root)
        if (n := len(text.splitlines())) > MAX_FILE_LINES
    ]


def functions_short(root: Path) -> list[str]:
    """No function whose body (its docstring included) is over 80 lines."""
    return [
        f"{path}:{node.lineno}: {node.name} has a body of {n} lines"
        for path, tree, _ in sources(root)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := (node.end_lineno or node.lineno) - node.body[0].lineno + 1) > MAX_BODY_LINES
    ]


RULES: list[Rule] = [
    utils_imports_no_command,
    utils_imports_down,
    commands_import_not_each_other,
    pika_behind_its_door,
    pika_exceptions_in_rabbitmq,
    pika_privates_behind_their_door,
    click_in_cli_only,
    event_names_from_schema,
    files_short,
    functions_short,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_the_tree_keeps_the_rule(rule: Rule) -> None:
    assert rule(ROOT) == []


# -- each rule finds a planted violation -------------------------------------------------------
def long_function() -> str:
    return "def f():\n" + "    x = 1\n" * (MAX_BODY_LINES + 1)


#: rule -> (file, its text) planted in an otherwise clean tree, and what the finding says.
PLANTED: dict[str, tuple[str, str, str]] = {
    "utils_imports_no_command": ("utils/x.py", "from worker.loop import Worker\n", "worker"),
    "utils_imports_down": (
        "utils/rabbitmq/queues.py",
        "from utils.eventlog.log import EventLog\n",
        "imports utils.eventlog",
    ),
    "commands_import_not_each_other": ("emitter/x.py", "import inspector.runs\n", "inspector"),
    "pika_behind_its_door": ("worker/x.py", "import pika\n", "imports pika"),
    "pika_exceptions_in_rabbitmq": (
        "utils/task.py",
        "import pika\n\ntry:\n    pass\nexcept pika.exceptions.AMQPError:\n    pass\n",
        "pika.exceptions",
    ),
    "pika_privates_behind_their_door": (
        "utils/rabbitmq/connect.py",
        "def version(conn):\n    return conn._impl.server_properties\n",
        "_impl",
    ),
    "click_in_cli_only": ("utils/text.py", "import click\n", "imports click"),
    "event_names_from_schema": (
        "inspector/x.py",
        'def f(e):\n    return e in ("requeued",)\n',
        "'requeued'",
    ),
    "files_short": ("utils/x.py", "x = 1\n" * (MAX_FILE_LINES + 1), "501 lines"),
    "functions_short": ("worker/x.py", long_function(), "f has a body of 81 lines"),
}


def plant(root: Path, path: str, text: str) -> None:
    """A small clean tree (each rule's allowed cases in it), then one file with `text`."""
    clean = {
        "utils/__init__.py": "",
        "utils/rabbitmq/connect.py": "import pika\nimport pika.exceptions\n",
        "utils/rabbitmq/internals.py": "def v(conn):\n    return conn._impl\n",
        "utils/eventlog/schema.py": 'DONE = "done"\n',
        "utils/cli.py": "import click\n",
        "worker/cli.py": "import click\n\nfrom utils.rabbitmq import connect\n",
        "worker/fastack.py": "import pika\n\n\ndef f(ch):\n    return ch._impl\n",
        "emitter/emit.py": 'from utils.eventlog.schema import DONE\n\n\ndef f():\n    """done"""\n',
        "inspector/runs.py": 'class Run:\n    _seen: int = 0\n\n\nJSON = {"id": 1, "done": 2}\n',
    }
    for name, body in {**clean, path: text}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_the_rule_finds_a_planted_violation(rule: Rule, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    plant(clean, "utils/empty.py", "")
    assert rule(clean) == [], "the clean tree must keep every rule"
    path, text, said = PLANTED[rule.__name__]
    plant(tmp_path / "bad", path, text)
    found = rule(tmp_path / "bad")
    assert len(found) == 1 and found[0].startswith(path) and said in found[0], found
