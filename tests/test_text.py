"""utils/text.py's safe(): any text from a task, safe for a terminal and a log line."""

from __future__ import annotations

import re

from utils.text import safe

RAW = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_safe_escapes_controls_c1_and_bidi_overrides_and_cuts_after_escaping():
    hostile = "a\x1b]0;title\x07b\x1b[2Jc\u202ed\x9be\\f\x7f"
    out = safe(hostile)
    assert not RAW.search(out)
    assert out == "a\\x1b]0;title\\x07b\\x1b[2Jc\\u202ed\\x9be\\\\f\\x7f"
    cut = safe("\x1b" * 10, 6)
    assert cut == "\\x1b\\…" and not RAW.search(cut)
    assert safe("Task 01 ...") == "Task 01 ..."
