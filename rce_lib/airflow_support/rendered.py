"""Read params after Jinja rendering: `"{{ params.x }}"` arrives as a string
("True", "None", "['a', 'b']"), whatever type the param had."""

from __future__ import annotations

import ast
from typing import Any

_NONE = (None, "", "None")


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def as_int(value: Any) -> int | None:
    return None if value in _NONE else int(value)


def as_str_list(value: Any) -> list[str] | None:
    """A list of strings, or None when unset or empty. Strings are parsed as Python
    literals (what rendering a list gives), never evaluated."""
    if value in _NONE:
        return None
    parsed = ast.literal_eval(value) if isinstance(value, str) else value
    if not isinstance(parsed, list | tuple):
        raise ValueError(f"expected a list, got {type(parsed).__name__}")
    return [str(v) for v in parsed] or None
