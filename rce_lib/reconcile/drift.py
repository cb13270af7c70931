"""What reconciliation talks about (no Airflow, no I/O): the drift kinds, the repairs,
one finding, and the views of ledger and fleet the rules compare.

Each DriftKind value is the one name of that drift everywhere: task log, ledger
event (`drift_detected`, data.drift), summary and metric label. Never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.api.models import Release, Sddc, Task
from rce_lib.errors import Reason
from rce_lib.ledger.models import ClaimHolder, Operation, Phase, Progress


class DriftKind(StrEnum):
    """Ways the ledger and the real fleet can disagree (stable snake_case names)."""

    SDDC_CHANGED_OUT_OF_BAND = "sddc_changed_out_of_band"
    """The whole SDDC is at another release than the ledger says (upgraded, reverted, moved on)."""
    COMPONENTS_PARTLY_UPGRADED = "components_partly_upgraded"
    """Some components are at other builds than the ledger's phase explains."""
    HOST_MAINTENANCE_IDLE = "host_maintenance_idle"
    """A host is in maintenance and no task runs on it."""
    HOST_DISCONNECTED = "host_disconnected"
    SDDC_REMOVED = "sddc_removed"
    """The API answers 404 for an SDDC the ledger still tracks."""
    TASK_SUCCEEDED_UNRECORDED = "task_succeeded_unrecorded"
    """The ledger holds a downstream task as running; the API says it SUCCEEDED."""
    TASK_FAILED_UNRECORDED = "task_failed_unrecorded"
    """The ledger holds a downstream task as running; the API says it FAILED or was CANCELED."""
    TASK_UNKNOWN = "task_unknown"
    """The ledger holds a downstream task as running; the API answers 404 for it."""
    STALE_CLAIM = "stale_claim"
    """A claim whose run is over (a killed worker, a run that ended) still holds the SDDC."""
    SNAPSHOT_MISSING = "snapshot_missing"
    """The SDDC was changed and may need a rollback, but the ledger has no snapshot."""
    LEDGER_ROW_CORRUPT = "ledger_row_corrupt"
    """A ledger row no longer parses."""
    API_CONTRACT_VIOLATION = "api_contract_violation"
    """The API answered the SDDC with a body that does not fit the contract."""


class RepairKind(StrEnum):
    """What is done about a finding. Everything but NEEDS_HUMAN is safe and automatic."""

    ADOPT_STATE = "adopt_state"
    """Move the ledger to what the SDDC really is (the phases then skip what is done)."""
    RELEASE_CLAIM = "release_claim"
    EXIT_MAINTENANCE = "exit_maintenance"
    REATTACH_TASK = "reattach_task"
    """Record the task's real (terminal) status on its operation slot."""
    FORGET_TASK = "forget_task"
    """The API no longer knows the task: bump the slot's generation so the next start gets a new key."""
    ADOPT_SNAPSHOT = "adopt_snapshot"
    """A snapshot task of this rollout succeeded: record its snapshot id."""
    NEEDS_HUMAN = "needs_human"
    """Recorded and surfaced; never guessed."""

    @property
    def safe(self) -> bool:
        return self is not RepairKind.NEEDS_HUMAN


class Finding(BaseModel):
    """One drift found for one SDDC, and what to do about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: DriftKind
    repair: RepairKind
    rollout: str
    wave: str
    sddc_id: str
    message: str
    subject: str = ""
    """What inside the SDDC (a host, a task, a ledger row); '' for the SDDC itself."""
    blocks: bool = False
    """In-flight: the phase about to act must stop for a human."""
    reason: Reason | None = None
    """The reason code a phase stops with when `blocks`."""
    phase: Phase | None = None
    slot: str = ""
    """Ledger operation slot (host_id column) for task repairs."""
    generation: int | None = None
    task_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def safe(self) -> bool:
        return self.repair.safe

    @property
    def fingerprint(self) -> str:
        """Same drift, same fingerprint: how a later sweep knows it is not new."""
        return f"{self.kind.value}:{self.rollout}/{self.wave}/{self.sddc_id}:{self.subject}"


class RunState(StrEnum):
    """What Airflow says of the run that owns a record or a claim."""

    RUNNING = "running"
    """Queued or running: someone watches this SDDC."""
    ENDED = "ended"
    """Finished (success or failed) or gone: nobody watches it."""
    UNKNOWN = "unknown"
    """Could not ask: judged by the lease instead."""


@dataclass(frozen=True)
class LedgerView:
    """What the ledger says about one SDDC in one (rollout, wave): the record the rules judge."""

    rollout: str
    wave: str
    sddc_id: str
    progress: Progress | None
    operations: tuple[Operation, ...] = ()
    claim: ClaimHolder | None = None
    """The SDDC's claim, whoever holds it."""
    run_state: RunState = RunState.UNKNOWN
    """State of the run that last wrote the progress record."""
    claim_run_state: RunState = RunState.UNKNOWN
    source: Release | None = None
    target: Release | None = None


@dataclass(frozen=True)
class RealView:
    """What the API says about the SDDC, and about the tasks the rules may ask for.

    `tasks` holds every task looked up: None means the API answered 404. A task id
    missing from the mapping was not looked up (no rule then judges it)."""

    sddc: Sddc | None
    removed: bool = False
    violation: str | None = None
    tasks: Mapping[str, Task | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleContext:
    """When and for whom the rules run."""

    now: datetime
    phase: Phase | None = None
    """In-flight: the phase about to act (it is the run that watches the SDDC). None: the sweep."""
    lease_s: float = 6 * 3600.0
    """A claim of a run whose state is unknown is stale once claim and record are older than this."""
