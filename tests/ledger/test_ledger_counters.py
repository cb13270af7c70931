"""Shared counters: increments from many processes add up, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing

from rce_lib.ledger import Ledger
from tests.ledger._ledger_workers import count_requests

WORKERS, ITERATIONS = 4, 40


def test_increments_add_up_and_new_keys_are_created(ledger: Ledger) -> None:
    ledger.add_counters({("a_total", '{"x":"1"}'): 2.0, ("a_total", '{"x":"2"}'): 1.0})
    ledger.add_counters({("a_total", '{"x":"1"}'): 0.5})
    ledger.add_counters({})
    assert sorted(ledger.counters()) == [("a_total", '{"x":"1"}', 2.5), ("a_total", '{"x":"2"}', 1.0)]


def test_worker_processes_add_without_losing_counts(ledger_url: str) -> None:
    Ledger(ledger_url).ensure_schema()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=count_requests, args=(ledger_url, i, ITERATIONS, barrier, results))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    reports = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [r for r in reports if "error" in r] == []
    values = {(n, lbl): v for n, lbl, v in Ledger(ledger_url).counters()}
    ok = values[
        (
            "rce_downstream_requests_total",
            json.dumps({"service": "nsx", "status_class": "2xx"}, separators=(",", ":")),
        )
    ]
    refused = values[
        (
            "rce_downstream_throttled_total",
            json.dumps({"code": "503", "service": "nsx"}, separators=(",", ":")),
        )
    ]
    assert ok == WORKERS * ITERATIONS * 3 / 4
    assert refused == WORKERS * ITERATIONS / 4
    count = values[("rce_downstream_request_duration_seconds_count", '{"service":"nsx"}')]
    assert count == WORKERS * ITERATIONS
