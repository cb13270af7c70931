"""In-memory records of the simulated fleet. Plain dataclasses: cheap to build, easy to
turn into JSON rows for persistence (`to_row` / `from_row`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ACTIVE = "ACTIVE"  # internal marker: not terminal yet; QUEUED/RUNNING is computed from the clock
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")
HOST_TASKS = ("HOST_MAINTENANCE", "UPGRADE_HOST")


@dataclass
class Host:
    id: str
    cluster_id: str
    version: str  # the ESXi build
    state: str  # CONNECTED | MAINTENANCE | DISCONNECTED


@dataclass
class SddcRec:
    id: str
    org_id: str
    name: str
    region: str
    version: str
    labels: dict[str, str]
    maintenance_window: dict[str, int] | None
    vcenter: str
    nsx: str
    hosts: list[Host]
    removed: bool = False

    def host(self, host_id: str) -> Host | None:
        return next((h for h in self.hosts if h.id == host_id), None)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SddcRec:
        data = dict(row)
        data["hosts"] = [Host(**h) for h in data["hosts"]]
        return cls(**data)


@dataclass
class Snapshot:
    id: str
    sddc_id: str
    version: str
    vcenter: str
    nsx: str
    hosts: dict[str, str]  # host id -> esx build
    created_at: float

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Snapshot:
        return cls(**row)


@dataclass
class TaskRec:
    id: str
    seq: int
    sddc_id: str
    host_id: str | None
    type: str
    created_at: float
    queued_until: float
    ends_at: float
    trace_id: str | None
    params: dict[str, Any]
    planned_error: dict[str, Any] | None = None  # decided at start (fault injection)
    status: str = ACTIVE
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    #: The span id of the `traceparent` that created it (the client span; shown by /sim/tasks/{id}).
    parent_span_id: str | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskRec:
        return cls(**row)


@dataclass
class IdemRec:
    key: str
    fingerprint: str
    task_id: str
    created_at: float

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IdemRec:
        return cls(**row)


@dataclass
class Dirty:
    """What changed since the last write to disk."""

    sddcs: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)
    idem: set[str] = field(default_factory=set)
    meta: bool = False

    def any_state(self) -> bool:
        return bool(self.sddcs or self.tasks or self.snapshots or self.idem or self.meta)
