"""The request recorder: what one HTTP attempt adds, batching, and never failing the caller."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from rce_lib.metrics import catalog
from rce_lib.metrics.downstream import MAX_PENDING_KEYS, RequestRecorder, increments_for, labels_key


@dataclass(frozen=True)
class Req:
    service: str


def test_one_throttled_attempt_counts_request_duration_and_refusal() -> None:
    inc = increments_for("nsx", 503, 0.3)
    assert inc[("rce_downstream_requests_total", labels_key(service="nsx", status_class="5xx"))] == 1
    assert inc[("rce_downstream_throttled_total", labels_key(service="nsx", code="503"))] == 1
    assert inc[("rce_downstream_request_duration_seconds_sum", labels_key(service="nsx"))] == 0.3
    buckets = {json.loads(k[1])["le"] for k in inc if k[0].endswith("_bucket")}
    assert "0.25" not in buckets and {"0.5", "1.0", "+Inf"} <= buckets


def test_no_response_is_status_class_error_and_not_a_refusal() -> None:
    inc = increments_for("control", None, 1.0)
    assert ("rce_downstream_requests_total", labels_key(service="control", status_class="error")) in inc
    assert not any(k[0] == "rce_downstream_throttled_total" for k in inc)


@pytest.mark.parametrize("hostile", ["nsx\n", "x" * 500, "../etc", "", "VCENTER"])
def test_unknown_services_collapse_to_bounded_values(hostile: str) -> None:
    services = {json.loads(k[1])["service"] for k in increments_for(hostile, 200, 0.1)}
    assert services <= catalog.SERVICES | {catalog.OTHER, catalog.NONE}


def test_flush_hands_one_batch_to_the_sink_and_empties() -> None:
    batches: list[Mapping[tuple[str, str], float]] = []
    rec = RequestRecorder(batches.append, flush_every=0)
    for _ in range(3):
        rec.observe(Req("esx"), 200, 0.01)
    assert rec.flush()
    assert len(batches) == 1
    assert batches[0][("rce_downstream_requests_total", labels_key(service="esx", status_class="2xx"))] == 3
    assert rec.pending() == {} and rec.flush()


def test_a_failing_sink_keeps_the_counts_for_the_next_flush() -> None:
    calls: list[Mapping[tuple[str, str], float]] = []

    def flaky(batch: Mapping[tuple[str, str], float]) -> None:
        calls.append(dict(batch))
        if len(calls) == 1:
            raise OSError("database restarting")

    rec = RequestRecorder(flaky, flush_every=0)
    rec.observe(Req("nsx"), 200, 0.01)
    assert not rec.flush()
    rec.observe(Req("nsx"), 200, 0.01)
    assert rec.flush()
    assert calls[1][("rce_downstream_requests_total", labels_key(service="nsx", status_class="2xx"))] == 2


def test_the_timer_flushes_without_another_request() -> None:
    flushed = threading.Event()
    rec = RequestRecorder(lambda _b: flushed.set(), flush_every=0.05)
    rec.observe(Req("vcenter"), 200, 0.01)
    assert flushed.wait(5)
    assert rec.pending() == {}


def test_observe_never_raises_and_pending_keys_are_capped() -> None:
    rec = RequestRecorder(lambda _b: None, flush_every=0)
    rec.observe(object(), 200, 0.1)  # type: ignore[arg-type]  # no .service: logged, swallowed
    for i in range(MAX_PENDING_KEYS + 10):
        rec.add({("x_total", str(i)): 1.0})
    assert len(rec.pending()) == MAX_PENDING_KEYS
    assert rec.dropped == 10
