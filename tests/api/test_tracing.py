from __future__ import annotations

import re

import pytest

from rce_lib.api.tracing import is_span_id, is_trace_id, span_id_for, trace_id_for, traceparent

TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")


def test_trace_id_is_deterministic_32_hex() -> None:
    trace_id = trace_id_for("rollout", "w1", "sddc-1", "run-1")
    assert trace_id == trace_id_for("rollout", "w1", "sddc-1", "run-1")
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id != "0" * 32


def test_trace_id_differs_per_part() -> None:
    ids = {
        trace_id_for("r", "w1", "sddc-1"),
        trace_id_for("r", "w1", "sddc-2"),
        trace_id_for("r", "w1sddc-1"),
    }
    assert len(ids) == 3
    assert trace_id_for(1) != trace_id_for("1")


def test_traceparent_has_a_fresh_span_per_call() -> None:
    trace_id = trace_id_for("x")
    first, second = traceparent(trace_id), traceparent(trace_id)
    m1, m2 = TRACEPARENT_RE.fullmatch(first), TRACEPARENT_RE.fullmatch(second)
    assert m1 and m2
    assert m1.group(1) == m2.group(1) == trace_id
    assert m1.group(2) != m2.group(2)
    assert m1.group(2) != "0" * 16


@pytest.mark.parametrize("bad", ["0" * 32, "ABCDEF" + "0" * 26, "abc", "g" * 32, "a" * 33])
def test_traceparent_refuses_invalid_trace_ids(bad: str) -> None:
    assert not is_trace_id(bad)
    with pytest.raises(ValueError):
        traceparent(bad)


def test_span_id_is_deterministic_16_hex_and_distinct_from_the_trace_id_material() -> None:
    span_id = span_id_for("sddc", "r", "w", "sddc-1", "run-1")
    assert span_id == span_id_for("sddc", "r", "w", "sddc-1", "run-1")
    assert is_span_id(span_id)
    assert span_id != span_id_for("wave", "r", "w", "sddc-1", "run-1")
    assert span_id != trace_id_for("sddc", "r", "w", "sddc-1", "run-1")[:16]


def test_traceparent_carries_the_given_span_id() -> None:
    trace_id, span_id = trace_id_for("x"), span_id_for("x")
    assert traceparent(trace_id, span_id) == f"00-{trace_id}-{span_id}-01"
    with pytest.raises(ValueError):
        traceparent(trace_id, "0" * 16)
