"""Pydantic models of the SDDC Control API contract (include/contracts/sddc-api.yaml).

Unknown fields are ignored and enums may grow, as the contract requires: an
unknown task status is non-terminal, an unknown SDDC status is not READY.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"
SDDC_ID_PATTERN = r"^[a-z0-9-]{1,64}$"
HOST_ID_PATTERN = r"^[a-z0-9-]{1,64}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
SNAPSHOT_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
LABEL_PATTERN = r"^[a-z0-9_.-]+=[A-Za-z0-9_.-]+$"

VERSION_RE = re.compile(VERSION_PATTERN)
SDDC_ID_RE = re.compile(SDDC_ID_PATTERN)
HOST_ID_RE = re.compile(HOST_ID_PATTERN)
TASK_ID_RE = re.compile(TASK_ID_PATTERN)
SNAPSHOT_ID_RE = re.compile(SNAPSHOT_ID_PATTERN)
IDEMPOTENCY_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)


def version_tuple(version: str) -> tuple[int, int, int]:
    """Order releases numerically ("1.10.0" > "1.9.0")."""
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


class _Open(StrEnum):
    """A string enum that maps values it does not know to UNKNOWN instead of failing."""

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            return cls("UNKNOWN")


class TaskStatus(_Open):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


class TaskType(_Open):
    PRECHECK = "PRECHECK"
    SNAPSHOT = "SNAPSHOT"
    UPGRADE_VCENTER = "UPGRADE_VCENTER"
    UPGRADE_NSX = "UPGRADE_NSX"
    HOST_MAINTENANCE = "HOST_MAINTENANCE"
    UPGRADE_HOST = "UPGRADE_HOST"
    ROLLBACK = "ROLLBACK"
    UNKNOWN = "UNKNOWN"


class SddcStatus(_Open):
    READY = "READY"
    UPGRADING = "UPGRADING"
    ROLLING_BACK = "ROLLING_BACK"
    DEGRADED = "DEGRADED"
    MAINTENANCE = "MAINTENANCE"
    UNKNOWN = "UNKNOWN"


class HostState(_Open):
    CONNECTED = "CONNECTED"
    MAINTENANCE = "MAINTENANCE"
    DISCONNECTED = "DISCONNECTED"
    UNKNOWN = "UNKNOWN"


class HealthStatus(_Open):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"


OpenTaskStatus = Annotated[TaskStatus, BeforeValidator(TaskStatus.parse)]
OpenTaskType = Annotated[TaskType, BeforeValidator(TaskType.parse)]
OpenSddcStatus = Annotated[SddcStatus, BeforeValidator(SddcStatus.parse)]
OpenHostState = Annotated[HostState, BeforeValidator(HostState.parse)]
OpenHealthStatus = Annotated[HealthStatus, BeforeValidator(HealthStatus.parse)]
Version = Annotated[str, Field(pattern=VERSION_PATTERN)]


class ApiModel(BaseModel):
    """Base for every response model: unknown fields are ignored, models are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class MaintenanceWindow(ApiModel):
    day_of_week: int = Field(ge=0, le=6)
    start_hour_utc: int = Field(ge=0, le=23)
    duration_hours: int = Field(ge=1, le=168)


class SddcSummary(ApiModel):
    id: str = Field(pattern=SDDC_ID_PATTERN)
    org_id: str
    name: str | None = None
    region: str
    version: Version
    status: OpenSddcStatus
    host_count: int = Field(ge=0)
    labels: dict[str, str]
    maintenance_window: MaintenanceWindow | None = None

    @property
    def ready(self) -> bool:
        return self.status is SddcStatus.READY


class Host(ApiModel):
    id: str = Field(pattern=HOST_ID_PATTERN)
    cluster_id: str
    version: str
    state: OpenHostState


class Components(ApiModel):
    vcenter: str
    nsx: str


class Sddc(SddcSummary):
    components: Components
    hosts: list[Host]
    active_task_ids: list[str] = Field(default_factory=list)


class SddcPage(ApiModel):
    items: list[SddcSummary]
    next_cursor: str | None = None


class ReleaseComponents(ApiModel):
    vcenter: str
    nsx: str
    esx: str


class Release(ApiModel):
    version: Version
    components: ReleaseComponents
    upgrade_from: list[Version]


class TaskError(ApiModel):
    code: str
    message: str
    retryable: bool


class Task(ApiModel):
    id: str = Field(pattern=TASK_ID_PATTERN)
    sddc_id: str
    host_id: str | None = None
    type: OpenTaskType
    status: OpenTaskStatus
    progress_percent: int | None = Field(default=None, ge=0, le=100)
    created_at: datetime
    updated_at: datetime
    trace_id: str | None = None
    result: dict[str, Any] | None = None
    error: TaskError | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal


class TaskList(ApiModel):
    items: list[Task]


class Health(ApiModel):
    sddc_id: str
    status: OpenHealthStatus
    window_s: int
    error_rate: float = Field(ge=0, le=1)
    p95_latency_ms: float = Field(ge=0)
    alarms: list[str] = Field(default_factory=list)


class Problem(ApiModel):
    type: str | None = None
    title: str
    status: int
    detail: str | None = None
    code: str | None = None
    existing_task_id: str | None = None
