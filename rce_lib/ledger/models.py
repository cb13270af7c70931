"""Pydantic rows out of the ledger. Everything the ledger returns is one of these,
so callers never see SQLAlchemy rows and a bad row fails loudly at the boundary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Phase(StrEnum):
    """Phases of one SDDC's upgrade, in order, plus rollback and the final `done`."""

    PRECHECK = "precheck"
    SNAPSHOT = "snapshot"
    UPGRADE_VCENTER = "upgrade_vcenter"
    UPGRADE_NSX = "upgrade_nsx"
    UPGRADE_HOSTS = "upgrade_hosts"
    POSTCHECK = "postcheck"
    ROLLBACK = "rollback"
    DONE = "done"


class Status(StrEnum):
    """Status of an SDDC in its current phase."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SKIPPED = "skipped"


class EventKind(StrEnum):
    """Event kinds the ledger itself writes; callers may append other kinds too."""

    PROGRESS_UPDATED = "progress_updated"
    PHASE_STARTED = "phase_started"
    PHASE_SKIPPED = "phase_skipped"
    PHASE_SUCCEEDED = "phase_succeeded"
    PHASE_FAILED = "phase_failed"
    ROLLBACK_STARTED = "rollback_started"
    SNAPSHOT_RECORDED = "snapshot_recorded"
    TASK_STARTED = "task_started"
    TASK_ADOPTED = "task_adopted"
    TASK_REPLAYED = "task_replayed"
    TASK_RECOVERED = "task_recovered"
    GENERATION_BUMPED = "generation_bumped"
    CLAIM_GRANTED = "claim_granted"
    CLAIM_REFUSED = "claim_refused"
    CLAIM_RELEASED = "claim_released"
    DRIFT_DETECTED = "drift_detected"
    DRIFT_RESOLVED = "drift_resolved"
    COHORT_RESOLVED = "cohort_resolved"
    WAVE_SUMMARY = "wave_summary"


class LedgerModel(BaseModel):
    """Rows are immutable snapshots; extra columns added later are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class LastError(LedgerModel):
    """The last failure of an SDDC, with the reason code shown everywhere else."""

    code: str
    message: str
    retryable: bool


class Progress(LedgerModel):
    """Where one SDDC stands in one wave of one rollout."""

    rollout: str
    wave: str
    sddc_id: str
    run_id: str
    phase: Phase
    status: Status
    attempts: int = Field(ge=0)
    phase_attempts: dict[Phase, int] = Field(default_factory=dict)
    target_version: str | None = None
    source_version: str | None = None
    snapshot_id: str | None = None
    task_ids: dict[Phase, dict[str, str]] = Field(default_factory=dict)
    """Current downstream task per phase and host ('' for SDDC-level phases)."""
    last_error: LastError | None = None
    started_at: AwareDatetime | None = None
    updated_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    version: int = Field(ge=0)


class Operation(LedgerModel):
    """One downstream operation slot (SDDC, phase, host) and its key generation."""

    rollout: str
    wave: str
    sddc_id: str
    phase: Phase
    host_id: str
    generation: int = Field(ge=0)
    task_id: str | None = None
    idempotency_key: str | None = None
    status: str | None = None
    updated_at: AwareDatetime


class Event(LedgerModel):
    """One line of the append-only event log."""

    id: int
    ts: AwareDatetime
    rollout: str
    wave: str
    sddc_id: str | None = None
    run_id: str
    kind: str
    phase: Phase | None = None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class ClaimHolder(LedgerModel):
    """Who holds an SDDC: one (rollout, wave), last taken by run_id."""

    sddc_id: str
    rollout: str
    wave: str
    run_id: str
    claimed_at: AwareDatetime
    expires_at: AwareDatetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class ClaimResult(LedgerModel):
    """Outcome of a claim: granted or not, and who holds the SDDC now."""

    granted: bool
    holder: ClaimHolder
