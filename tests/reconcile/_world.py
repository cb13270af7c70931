"""Builders for the reconciliation tests: API models for the pure rule tests, and ledger
records written the way the engine writes them for the tests against the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rce_lib.api.models import Host, Release, Sddc, Task
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import ClaimHolder, Operation, Phase, Progress, Status

ROLLOUT = "r-rec"
WAVE = "w1"
SOURCE = "1.25.0"
TARGET = "1.26.0"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

RELEASES = {
    "1.25.0": Release.model_validate(
        {
            "version": "1.25.0",
            "components": {"vcenter": "vc25", "nsx": "nsx25", "esx": "esx25"},
            "upgrade_from": ["1.24.0"],
        }
    ),
    "1.26.0": Release.model_validate(
        {
            "version": "1.26.0",
            "components": {"vcenter": "vc26", "nsx": "nsx26", "esx": "esx26"},
            "upgrade_from": ["1.25.0"],
        }
    ),
}
S, T = RELEASES[SOURCE].components, RELEASES[TARGET].components


def host(host_id: str, version: str = S.esx, state: str = "CONNECTED", cluster: str = "c1") -> Host:
    return Host.model_validate({"id": host_id, "cluster_id": cluster, "version": version, "state": state})


def sddc(
    *,
    version: str = SOURCE,
    vcenter: str = S.vcenter,
    nsx: str = S.nsx,
    hosts: list[Host] | None = None,
    active: list[str] | None = None,
) -> Sddc:
    hosts = hosts if hosts is not None else [host("h1"), host("h2")]
    return Sddc.model_validate(
        {
            "id": "sddc-0001",
            "org_id": "org",
            "region": "us-east-1",
            "version": version,
            "status": "READY",
            "host_count": len(hosts),
            "labels": {},
            "components": {"vcenter": vcenter, "nsx": nsx},
            "hosts": [h.model_dump() for h in hosts],
            "active_task_ids": active or [],
        }
    )


def progress(
    phase: Phase = Phase.PRECHECK,
    status: Status = Status.PENDING,
    *,
    snapshot_id: str | None = None,
    started: bool = False,
    updated_at: datetime = NOW,
    run_id: str = "run-1",
) -> Progress:
    return Progress(
        rollout=ROLLOUT,
        wave=WAVE,
        sddc_id="sddc-0001",
        run_id=run_id,
        phase=phase,
        status=status,
        attempts=1 if started else 0,
        source_version=SOURCE,
        target_version=TARGET,
        snapshot_id=snapshot_id,
        started_at=updated_at if started else None,
        updated_at=updated_at,
        version=3,
    )


def operation(
    phase: Phase, task_id: str, status: str = "RUNNING", slot: str = "", generation: int = 0
) -> Operation:
    return Operation(
        rollout=ROLLOUT,
        wave=WAVE,
        sddc_id="sddc-0001",
        phase=phase,
        host_id=slot,
        generation=generation,
        task_id=task_id,
        status=status,
        updated_at=NOW,
    )


def task(
    task_id: str,
    status: str,
    *,
    type_: str = "UPGRADE_VCENTER",
    host_id: str | None = None,
    result: dict[str, Any] | None = None,
) -> Task:
    return Task.model_validate(
        {
            "id": task_id,
            "sddc_id": "sddc-0001",
            "host_id": host_id,
            "type": type_,
            "status": status,
            "created_at": NOW.isoformat(),
            "updated_at": NOW.isoformat(),
            "result": result,
        }
    )


def claim(run_id: str = "run-1", *, age: timedelta = timedelta(minutes=5)) -> ClaimHolder:
    return ClaimHolder(sddc_id="sddc-0001", rollout=ROLLOUT, wave=WAVE, run_id=run_id, claimed_at=NOW - age)


def enroll(
    ledger: Ledger,
    sddc_id: str,
    *,
    phase: Phase = Phase.PRECHECK,
    status: Status = Status.PENDING,
    snapshot_id: str | None = None,
    run_id: str = "run-dead",
    claim: bool = True,
    started: bool = False,
    finished: bool = False,
) -> Progress:
    """A ledger record as resolve_cohort and the phases leave it (and the wave's claim)."""
    if claim:
        assert ledger.claim(sddc_id, ROLLOUT, WAVE, run_id).granted
    now = datetime.now(UTC)
    return ledger.upsert_progress(
        ROLLOUT,
        WAVE,
        sddc_id,
        run_id,
        event="enrolled",
        phase=phase,
        status=status,
        source_version=SOURCE,
        target_version=TARGET,
        snapshot_id=snapshot_id,
        started_at=now if started else None,
        finished_at=now if finished else None,
    )
