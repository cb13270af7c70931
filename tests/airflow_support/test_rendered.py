"""Params as they arrive after Jinja rendering."""

from __future__ import annotations

import pytest

from rce_lib.airflow_support.rendered import as_bool, as_int, as_str_list


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("True", True),
        ("False", False),
        (" true ", True),
        (True, True),
        ("None", False),
        ("", False),
        (0, False),
    ],
)
def test_as_bool(value: object, expected: bool) -> None:
    assert as_bool(value) is expected


def test_as_int() -> None:
    assert as_int("None") is None and as_int("") is None and as_int(None) is None
    assert as_int("3") == 3 and as_int(4) == 4
    with pytest.raises(ValueError):
        as_int("three")


def test_as_str_list_parses_rendered_lists_without_evaluating_them() -> None:
    assert as_str_list("['sddc-0001', 'sddc-0002']") == ["sddc-0001", "sddc-0002"]
    assert as_str_list(["sddc-0001"]) == ["sddc-0001"]
    assert as_str_list("None") is None and as_str_list("[]") is None
    with pytest.raises(ValueError):
        as_str_list("__import__('os').system('true')")
    with pytest.raises(ValueError):
        as_str_list("'sddc-0001'")
