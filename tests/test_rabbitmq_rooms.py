"""The rooms of utils/rabbitmq import one way, and only errors.py names pika's exceptions
(read from the source, no broker)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WING = ROOT / "utils" / "rabbitmq"
#: Each room may import only those before it (utils/rabbitmq/__init__.py has the table).
ORDER = ["errors", "internals", "connect", "channel", "management", "queues", "publish"]


def wing_imports(path: Path) -> set[str]:
    """The rooms of the wing a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "utils.rabbitmq":
                found.update(a.name for a in node.names)
            elif node.module.startswith("utils.rabbitmq."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[2] for a in node.names if a.name.startswith("utils.rabbitmq.")
            )
    return found


def names_pika_exceptions(path: Path) -> bool:
    source = path.read_text()
    return "pika.exceptions" in source or "from pika import exceptions" in source


def test_every_room_is_in_the_order_and_imports_only_the_rooms_before_it():
    rooms = sorted(p.stem for p in WING.glob("*.py") if p.stem != "__init__")
    assert rooms == sorted(ORDER)
    for i, room in enumerate(ORDER):
        later = wing_imports(WING / f"{room}.py") - set(ORDER[:i])
        assert not later, f"utils/rabbitmq/{room}.py imports {sorted(later)}, not before it"


def test_only_errors_py_names_pikas_exceptions():
    naming = [p.stem for p in WING.glob("*.py") if names_pika_exceptions(p)]
    assert naming == ["errors"]


def test_the_check_sees_a_planted_violation(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import pika.exceptions as px\nfrom utils.rabbitmq.publish import publish_copy\n"
    )
    assert wing_imports(planted) == {"publish"} and names_pika_exceptions(planted)
