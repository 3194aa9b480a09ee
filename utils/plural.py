"""Counts in words: "1 task", "2 tasks", never "1 tasks" or "task(s)"."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str = "") -> str:
    """The count and the noun, plural unless the count is 1 (`nouns` for an irregular plural)."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"
