"""Downstream operation slots and Idempotency-Key generations (compare-and-set bumps)."""

from __future__ import annotations

import pytest

from rce_lib.ledger import EventKind, Ledger, Phase, StaleGeneration

R, W, S = "r-2025-06", "wave-1", "sddc-1"


def test_unknown_operation_is_none_meaning_generation_zero(ledger: Ledger) -> None:
    assert ledger.get_operation(R, W, S, Phase.UPGRADE_NSX) is None


def test_recorded_task_is_read_back_and_shown_in_progress(ledger: Ledger) -> None:
    ledger.phase_started(R, W, S, "run-a", Phase.UPGRADE_HOSTS)
    op = ledger.record_operation_task(
        R,
        W,
        S,
        Phase.UPGRADE_HOSTS,
        host_id="host-2",
        generation=0,
        task_id="t-1",
        key="k-0",
        status="RUNNING",
        run_id="run-a",
    )
    assert (op.generation, op.task_id, op.idempotency_key, op.status, op.host_id) == (
        0,
        "t-1",
        "k-0",
        "RUNNING",
        "host-2",
    )
    assert ledger.get_operation(R, W, S, Phase.UPGRADE_HOSTS, host_id="host-2") == op
    assert ledger.get_operation(R, W, S, Phase.UPGRADE_HOSTS, host_id="host-1") is None

    ledger.record_operation_task(
        R,
        W,
        S,
        Phase.UPGRADE_HOSTS,
        host_id="host-2",
        generation=0,
        task_id="t-1",
        key="k-0",
        status="SUCCEEDED",
        run_id="run-b",
        kind=EventKind.TASK_ADOPTED,
    )
    progress = ledger.get(R, W, S)
    assert progress is not None
    assert progress.task_ids == {Phase.UPGRADE_HOSTS: {"host-2": "t-1"}}
    assert progress.run_id == "run-b"
    evs = ledger.events(sddc_id=S, kinds=[EventKind.TASK_STARTED, EventKind.TASK_ADOPTED])
    assert [e.kind for e in evs] == [EventKind.TASK_STARTED, EventKind.TASK_ADOPTED]
    assert evs[1].data["status"] == "SUCCEEDED" and evs[1].data["host_id"] == "host-2"


def test_recording_a_task_does_not_invent_a_progress_record(ledger: Ledger) -> None:
    ledger.record_operation_task(
        R, W, S, Phase.PRECHECK, generation=0, task_id="t-1", key="k", status="QUEUED", run_id="run-a"
    )
    assert ledger.get(R, W, S) is None


def test_bump_generation_is_compare_and_set(ledger: Ledger) -> None:
    ledger.record_operation_task(
        R,
        W,
        S,
        Phase.UPGRADE_VCENTER,
        generation=0,
        task_id="t-1",
        key="k-0",
        status="FAILED",
        run_id="run-a",
    )
    assert ledger.bump_generation(R, W, S, Phase.UPGRADE_VCENTER, expected_generation=0, run_id="run-a") == 1
    # a second process that also saw generation 0 fail gets the current value, no second bump
    assert ledger.bump_generation(R, W, S, Phase.UPGRADE_VCENTER, expected_generation=0, run_id="run-b") == 1

    op = ledger.get_operation(R, W, S, Phase.UPGRADE_VCENTER)
    assert op is not None
    assert (op.generation, op.task_id, op.idempotency_key, op.status) == (1, None, None, None)
    bumps = ledger.events(kinds=[EventKind.GENERATION_BUMPED])
    assert len(bumps) == 1
    assert bumps[0].data == {"host_id": "", "from": 0, "to": 1, "task_id": "t-1"}

    assert ledger.bump_generation(R, W, S, Phase.UPGRADE_VCENTER, expected_generation=1, run_id="run-b") == 2


def test_bump_of_an_unrecorded_slot_starts_from_zero(ledger: Ledger) -> None:
    assert ledger.bump_generation(R, W, S, Phase.ROLLBACK, expected_generation=0, run_id="run-a") == 1
    assert ledger.bump_generation(R, W, S, Phase.ROLLBACK, expected_generation=5, run_id="run-a") == 1


def test_task_for_a_stale_generation_is_refused(ledger: Ledger) -> None:
    ledger.bump_generation(R, W, S, Phase.UPGRADE_NSX, expected_generation=0, run_id="run-a")
    with pytest.raises(StaleGeneration, match="generation 0"):
        ledger.record_operation_task(
            R, W, S, Phase.UPGRADE_NSX, generation=0, task_id="t-old", key="k-0", status="RUNNING", run_id="r"
        )
    op = ledger.get_operation(R, W, S, Phase.UPGRADE_NSX)
    assert op is not None and op.task_id is None and op.generation == 1
    assert ledger.events(kinds=[EventKind.TASK_STARTED]) == []


def test_host_slots_have_independent_generations(ledger: Ledger) -> None:
    ledger.bump_generation(R, W, S, Phase.UPGRADE_HOSTS, host_id="host-1", expected_generation=0, run_id="r")
    assert ledger.get_operation(R, W, S, Phase.UPGRADE_HOSTS, host_id="host-2") is None
    op = ledger.get_operation(R, W, S, Phase.UPGRADE_HOSTS, host_id="host-1")
    assert op is not None and op.generation == 1
