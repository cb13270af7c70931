"""A snapshot phase cut off after it started its snapshot, and resumed (a killed worker or task
process, then Airflow's retry or an operator's clear), against the real simulator: found by the
crash-resume soak (tests/integration/test_crash_resume_soak.py), where the resumed phase took a
second snapshot because the first one's id never reached the ledger."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.snapshot import SnapshotOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET, SDDC = "r", "w", "manual__2026-11-26", "1.26.0", "sddc-0001"


class Ti:
    try_number = 1


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    # a snapshot takes 1 s: long enough to be still running when the phase resumes at once
    server = sim_factory(size=2, time_scale=6000, config={"durations_s": {"SNAPSHOT": 6000}})
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    _enroll(ledger, R, W, SDDC, RUN, TARGET, "1.25.0")
    return server


def _snapshot(**kw: Any) -> SnapshotOperator:
    return SnapshotOperator(
        task_id="snapshot", sddc_id=SDDC, target_version=TARGET, rollout=R, wave=W, poll_min_s=0.05, **kw
    )


def _cut_off(fleet: Any, ledger: Ledger) -> str:
    """The first execution starts the snapshot and is gone before it settles it: here it
    defers (no inline wait) and its trigger never comes back, which leaves the ledger as a
    kill between the start and the result does (task recorded, snapshot id not)."""
    with pytest.raises(TaskDeferred):
        _snapshot(inline_wait_s=0.0).execute({"run_id": RUN, "ti": Ti()})
    op = ledger.get_operation(R, W, SDDC, Phase.SNAPSHOT, host_id="")
    assert op is not None and op.task_id
    progress = ledger.get(R, W, SDDC)
    assert progress is not None and progress.snapshot_id is None
    return str(op.task_id)


@pytest.mark.parametrize("finished", [True, False], ids=["snapshot-done-meanwhile", "snapshot-still-running"])
def test_a_resumed_snapshot_phase_adopts_the_snapshot_it_started_instead_of_taking_another(
    fleet: Any, ledger: Ledger, finished: bool
) -> None:
    task_id = _cut_off(fleet, ledger)
    if finished:
        assert fleet.wait_task(task_id)["status"] == "SUCCEEDED"
    else:
        assert fleet.request("GET", f"/api/v1/tasks/{task_id}").json()["status"] in ("QUEUED", "RUNNING")
    # the retry (or the cleared task): a new execution from the start, reconciliation first
    message = _snapshot(inline_wait_s=20.0).execute({"run_id": RUN, "ti": Ti()})
    counters = fleet.counters()
    assert counters["tasks_created"].get("SNAPSHOT") == 1, counters["tasks_created"]
    snapshot_id = fleet.wait_task(task_id)["result"]["snapshot_id"]
    progress = ledger.get(R, W, SDDC)
    assert progress is not None and progress.snapshot_id == snapshot_id, (progress, message)
    assert snapshot_id in str(message)
    snapshots = [s["id"] for s in fleet.state()["snapshots"] if s["sddc_id"] == SDDC]
    assert snapshots == [snapshot_id]
    kinds = [e.kind for e in ledger.events(rollout=R, wave=W, sddc_id=SDDC, limit=1000)]
    assert "generation_bumped" not in kinds, kinds
    assert counters["duplicate_starts"]["count"] == 0
