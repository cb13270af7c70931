"""Several worker PROCESSES writing one ledger at once: no lost updates, one claim
winner, one generation bump, and no 'database is locked'."""

from __future__ import annotations

import importlib
import multiprocessing
import queue
from pathlib import Path
from typing import Any

import pytest

from rce_lib.ledger import EventKind, Ledger, Phase

WORKERS = 4
ITERATIONS = 20


def test_worker_processes_race_without_lost_updates(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned children import the worker by module name, with the parent's sys.path:
    # make it importable whatever pytest's import mode is.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    workers = importlib.import_module("_ledger_workers")
    hammer, R, W = workers.hammer, workers.R, workers.W
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=hammer, args=(ledger_url, i, ITERATIONS, barrier, results)) for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    reports: list[dict[str, Any]] = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=60))
    except queue.Empty:
        pass
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    errors = [r["error"] for r in reports if "error" in r]
    assert errors == []
    assert len(reports) == WORKERS
    assert all(p.exitcode == 0 for p in procs)

    ledger = Ledger(ledger_url)
    total = WORKERS * ITERATIONS

    # exactly one claim winner, and the ledger agrees with the winner
    winners = [r["idx"] for r in reports if r["granted"]]
    assert len(winners) == 1
    assert ledger.active_claims()["sddc-contested"].wave == f"wave-{winners[0]}"
    assert len(ledger.events(kinds=[EventKind.CLAIM_GRANTED])) == 1
    assert len(ledger.events(kinds=[EventKind.CLAIM_REFUSED])) == WORKERS - 1

    # one generation bump; every racer sees generation 1
    assert {r["generation"] for r in reports} == {1}
    assert len(ledger.events(kinds=[EventKind.GENERATION_BUMPED])) == 1

    # locked read-modify-write: every attempt counted
    shared = ledger.get(R, W, "sddc-shared")
    assert shared is not None
    assert shared.attempts == total
    assert shared.phase_attempts == {Phase.UPGRADE_HOSTS: total}
    assert shared.version == total
    assert len(ledger.events(sddc_id="sddc-shared", kinds=[EventKind.PHASE_STARTED])) == total

    # compare-and-set read-modify-write: counter == sum of increments
    cas = ledger.get(R, W, "sddc-cas")
    assert cas is not None and cas.attempts == total

    # append-only log: every event there, ids unique
    logged = ledger.events(sddc_id="sddc-log", limit=10 * total)
    assert sorted(e.run_id for e in logged) == sorted(
        f"{i}:{j}" for i in range(WORKERS) for j in range(ITERATIONS)
    )
    assert len({e.id for e in logged}) == total
