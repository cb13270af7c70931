"""Code run in spawned worker processes by test_ledger_concurrency (must be importable)."""

from __future__ import annotations

import traceback
from typing import Any

from rce_lib.ledger import EventKind, Ledger, Phase

R, W = "r-conc", "wave-1"


def hammer(url: str, idx: int, iterations: int, barrier: Any, results: Any) -> None:
    """Race every kind of write against the other workers; report counts or the error."""
    try:
        ledger = Ledger(url)  # no ensure_schema by the parent: the workers race to create it
        barrier.wait(timeout=60)
        claim = ledger.claim("sddc-contested", R, f"wave-{idx}", f"run-{idx}")
        bumped = ledger.bump_generation(
            R, W, "sddc-gen", Phase.UPGRADE_NSX, expected_generation=0, run_id="r"
        )
        cas_retries = 0
        for i in range(iterations):
            ledger.phase_started(R, W, "sddc-shared", f"run-{idx}", Phase.UPGRADE_HOSTS)
            ledger.append_event(R, W, EventKind.DRIFT_DETECTED, sddc_id="sddc-log", run_id=f"{idx}:{i}")
            while True:  # read-modify-write through compare-and-set
                current = ledger.get(R, W, "sddc-cas") or ledger.upsert_progress(R, W, "sddc-cas", "seed")
                done = ledger.update_if_version(
                    R, W, "sddc-cas", f"run-{idx}", current.version, attempts=current.attempts + 1
                )
                if done is not None:
                    break
                cas_retries += 1
        results.put({"idx": idx, "granted": claim.granted, "generation": bumped, "cas_retries": cas_retries})
    except BaseException:
        results.put({"idx": idx, "error": traceback.format_exc()})


def count_requests(url: str, idx: int, iterations: int, barrier: Any, results: Any) -> None:
    """Record downstream requests through the process recorder, flushing as a worker would."""
    try:
        from rce_lib.metrics.downstream import RequestRecorder, increments_for

        recorder = RequestRecorder(Ledger(url).add_counters, flush_every=0)
        barrier.wait(timeout=60)
        for i in range(iterations):
            recorder.add(increments_for("nsx", 503 if i % 4 == 0 else 200, 0.02))
            if i % 5 == 4:
                assert recorder.flush()
        assert recorder.flush()
        results.put({"idx": idx})
    except BaseException:
        results.put({"idx": idx, "error": traceback.format_exc()})
