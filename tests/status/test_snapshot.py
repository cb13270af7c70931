"""The status snapshot: counts per phase and status, failures, and the ETA arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rce_lib.ledger import Ledger, Phase, Progress, Status
from rce_lib.status.collect import collect
from rce_lib.status.snapshot import (
    grid_slots,
    phase_medians,
    remaining_phases,
    remaining_seconds,
    wave_eta,
    wave_status,
)

from .conftest import ROLLOUT, WAVE, Clock

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MEDIANS = {"precheck": 10.0, "snapshot": 20.0, "upgrade_vcenter": 100.0, "upgrade_nsx": 50.0,
           "upgrade_hosts": 300.0, "postcheck": 20.0}  # fmt: skip


def row(phase: Phase, status: Status, *, updated: datetime = NOW, finished: bool = False) -> Progress:
    return Progress(
        rollout=ROLLOUT, wave=WAVE, sddc_id="sddc-0001", run_id="r", phase=phase, status=status,
        attempts=1, version=1, updated_at=updated, finished_at=updated if finished else None,
    )  # fmt: skip


def test_remaining_phases_start_at_the_current_one_unless_it_succeeded() -> None:
    assert remaining_phases(row(Phase.PRECHECK, Status.PENDING))[0] is Phase.PRECHECK
    assert remaining_phases(row(Phase.SNAPSHOT, Status.SUCCEEDED)) == [
        Phase.UPGRADE_VCENTER, Phase.UPGRADE_NSX, Phase.UPGRADE_HOSTS, Phase.POSTCHECK,
    ]  # fmt: skip
    # a retryable failure (no finished_at): Airflow runs the phase again
    assert remaining_phases(row(Phase.UPGRADE_NSX, Status.FAILED)) == [
        Phase.UPGRADE_NSX, Phase.UPGRADE_HOSTS, Phase.POSTCHECK,
    ]  # fmt: skip
    assert remaining_phases(row(Phase.ROLLBACK, Status.RUNNING)) == [Phase.ROLLBACK]
    assert remaining_phases(row(Phase.DONE, Status.SUCCEEDED)) == []
    assert remaining_phases(row(Phase.PRECHECK, Status.FAILED, finished=True)) == []
    assert remaining_phases(row(Phase.ROLLBACK, Status.ROLLED_BACK)) == []


def test_remaining_seconds_sums_medians_less_the_time_spent_in_a_running_phase() -> None:
    assert remaining_seconds(row(Phase.PRECHECK, Status.PENDING), MEDIANS, NOW) == 500.0
    running = row(Phase.UPGRADE_HOSTS, Status.RUNNING, updated=NOW - timedelta(seconds=120))
    assert remaining_seconds(running, MEDIANS, NOW) == 300.0 - 120.0 + 20.0
    overdue = row(Phase.UPGRADE_HOSTS, Status.RUNNING, updated=NOW - timedelta(hours=2))
    assert remaining_seconds(overdue, MEDIANS, NOW) == 20.0  # never below the phases after it
    assert remaining_seconds(row(Phase.PRECHECK, Status.PENDING), {"precheck": 1.0}, NOW) is None


@pytest.mark.parametrize(
    ("remaining", "parallelism", "eta"),
    [
        ([], 4, 0.0),
        ([100.0, 50.0, 50.0], 2, 100.0),  # bounded by the slowest SDDC
        ([10.0] * 10, 2, 50.0),  # bounded by the work spread over the slots
        ([10.0] * 10, 20, 10.0),
        ([30.0, 30.0], 0, 60.0),  # a nonsense parallelism counts as 1
    ],
)
def test_wave_eta_is_the_larger_of_slowest_sddc_and_work_over_slots(
    remaining: list[float], parallelism: int, eta: float
) -> None:
    assert wave_eta(remaining, parallelism) == eta


def test_phase_medians_ignore_phases_without_observations() -> None:
    assert phase_medians({"precheck": [1.0, 9.0, 3.0], "snapshot": []}) == {"precheck": 3.0}


def test_wave_status_from_a_ledger(status_ledger: tuple[Ledger, str, Clock]) -> None:
    ledger, _, clock = status_ledger
    snapshot = collect(ledger, now=clock.now, wave=WAVE)
    assert len(snapshot.waves) == 1
    wave = snapshot.waves[0]
    assert (wave.total, wave.finished) == (5, 3)
    assert wave.by_status == {"succeeded": 2, "running": 1, "failed": 1, "pending": 1}
    assert wave.by_phase["done"] == {"succeeded": 2}
    assert wave.by_phase["upgrade_vcenter"] == {"running": 1}
    assert [(f.sddc_id, f.error_code) for f in wave.failures] == [("sddc-0004", "PRECHECK_BLOCKED")]
    assert wave.medians_s["upgrade_vcenter"] == 101.0 and wave.medians_s["precheck"] == 10.0
    # sddc-0003: vcenter just started (101) + nsx 51 + hosts 301 + postcheck 21 = 474
    # sddc-0005: all six phases = 504; max_parallel 2 from the run: max(504, 978 / 2) = 504
    by_id = {s.sddc_id: s for s in wave.sddcs}
    assert by_id["sddc-0003"].remaining_s == 474.0
    assert by_id["sddc-0005"].remaining_s == 504.0
    assert (wave.parallelism, wave.eta_s) == (2, 504.0)
    assert wave.sddcs[0].sddc_id == "sddc-0001" and wave.sddcs[0].canary
    # map index i of each group is entry i of its slice: the canary slice, then the rest in order
    assert [(s.sddc_id, s.grid) for s in wave.sddcs] == [
        ("sddc-0001", "canary[0]"),
        ("sddc-0002", "bulk[0]"),
        ("sddc-0003", "bulk[1]"),
        ("sddc-0004", "bulk[2]"),
        ("sddc-0005", "bulk[3]"),
    ]
    assert wave.excluded == {"ALREADY_AT_TARGET": 1}
    assert not snapshot.done


def test_eta_is_unknown_until_every_phase_ahead_was_observed(
    status_ledger: tuple[Ledger, str, Clock],
) -> None:
    ledger, _, clock = status_ledger
    rows = ledger.list_progress(rollout=ROLLOUT, wave=WAVE)
    wave = wave_status(ROLLOUT, WAVE, rows, durations={"precheck": [10.0]}, now=clock.now, parallelism=3)
    assert wave.eta_s is None
    assert "snapshot" in wave.eta_note and "upgrade_hosts" in wave.eta_note


def test_grid_slots_follow_the_slices_resolve_cohort_pushed() -> None:
    """The canary slice keeps the cohort's canary order and only claimed SDDCs (one claimed by
    another wave drops out of both slices); no cohort event, no placement."""
    from rce_lib.ledger.models import Event

    cohort = Event(
        id=1, ts=NOW, rollout=ROLLOUT, wave=WAVE, run_id="r", kind="cohort_resolved", message="",
        data={"members": ["sddc-0003", "sddc-0001", "sddc-0004"], "canary": ["sddc-0004", "sddc-0002"]},
    )  # fmt: skip
    assert grid_slots(cohort) == {"sddc-0004": "canary[0]", "sddc-0003": "bulk[0]", "sddc-0001": "bulk[1]"}
    assert grid_slots(None) == {}
