"""Every metric rce exports: name, type, labels, help, and the bounded value sets.

One list, read by the exporter (what it serves), the alert rules' and the
dashboard's tests (that they name only real metrics), and the docs. Label values
that come from outside (reason codes from the API, drift kinds in old ledger
rows) go through `bounded()`, so a hostile or buggy downstream cannot create
series: anything unknown becomes `other`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from rce_lib.errors import Reason
from rce_lib.reconcile.drift import DriftKind, RepairKind

OTHER: Final = "other"
NONE: Final = "none"

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()

    @property
    def series_names(self) -> tuple[str, ...]:
        """The names that appear in the text format (and so in PromQL)."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


# Phase durations run from seconds (a skipped precheck) to hours (a large cluster's hosts).
PHASE_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
REQUEST_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PHASE_DURATION: Final = MetricSpec(
    "rce_phase_duration_seconds",
    "histogram",
    ("wave", "phase", "outcome"),
    "Wall time of one phase attempt of one SDDC, from its start to its end.",
    PHASE_BUCKETS,
)
PHASE_TOTAL: Final = MetricSpec(
    "rce_phase_total",
    "counter",
    ("wave", "phase", "outcome", "reason"),
    "Phase attempts that ended, by outcome and reason code (`none` when it succeeded).",
)
PHASE_RETRIES: Final = MetricSpec(
    "rce_phase_retries_total",
    "counter",
    ("wave", "phase", "reason"),
    "Phase attempts started again after a failure of the same phase, by the failure's reason.",
)
SDDCS: Final = MetricSpec(
    "rce_sddcs",
    "gauge",
    ("wave", "state"),
    "SDDCs per wave by state (done, running, pending, failed, rolled_back, skipped).",
)
SDDCS_IN_PHASE: Final = MetricSpec(
    "rce_sddcs_in_phase",
    "gauge",
    ("wave", "phase", "status"),
    "SDDCs per wave by their current phase and status.",
)
PHASE_OLDEST_RUNNING: Final = MetricSpec(
    "rce_phase_oldest_running_seconds",
    "gauge",
    ("wave", "phase"),
    "Age of the longest-running phase attempt still running, per wave and phase.",
)
PHASE_MAX: Final = MetricSpec(
    "rce_phase_max_seconds",
    "gauge",
    ("phase",),
    "The bound past which an SDDC is stuck in a phase (RCE_PHASE_MAX_SECONDS overrides).",
)
GATE_DECISIONS: Final = MetricSpec(
    "rce_gate_decisions_total",
    "counter",
    ("wave", "decision"),
    "Canary gate decisions: pass, fail, inconclusive, or hold (inconclusive, sampling again).",
)
WAVE_RUNS: Final = MetricSpec(
    "rce_wave_runs_total",
    "counter",
    ("wave", "result"),
    "Wave runs that reached their summary, by result (`promoted` or the reason that failed it).",
)
WAVE_HELD: Final = MetricSpec(
    "rce_wave_held_total",
    "counter",
    ("wave", "by"),
    "Times a wave was held (halted) by a brake: kill_switch, error_budget.",
)
DRIFT_TOTAL: Final = MetricSpec(
    "rce_drift_total",
    "counter",
    ("kind", "repair", "outcome"),
    "Drift findings between the ledger and the real fleet, by kind, repair and what came of it.",
)
DRIFT_OPEN: Final = MetricSpec(
    "rce_drift_open",
    "gauge",
    ("kind",),
    "Drift findings flagged for a human and not resolved since.",
)
DOWNSTREAM_REQUESTS: Final = MetricSpec(
    "rce_downstream_requests_total",
    "counter",
    ("service", "status_class"),
    "HTTP requests to the SDDC Control API by service and status class (2xx..5xx, or `error`).",
)
DOWNSTREAM_DURATION: Final = MetricSpec(
    "rce_downstream_request_duration_seconds",
    "histogram",
    ("service",),
    "Time of one HTTP exchange with the SDDC Control API, body included.",
    REQUEST_BUCKETS,
)
DOWNSTREAM_THROTTLED: Final = MetricSpec(
    "rce_downstream_throttled_total",
    "counter",
    ("service", "code"),
    "Requests the SDDC Control API refused with 429 (rate) or 503 (capacity).",
)
DOWNSTREAM_LIMIT: Final = MetricSpec(
    "rce_downstream_concurrency_limit",
    "gauge",
    ("service",),
    "The engine's adaptive limit on its in-flight tasks per service after sustained refusals "
    "(rce_lib.pacing); -1 while open (only the Airflow pool bounds it).",
)
DOWNSTREAM_IN_FLIGHT: Final = MetricSpec(
    "rce_downstream_in_flight",
    "gauge",
    ("service",),
    "Downstream tasks of ours holding a pacing slot per service (started, not yet seen to end).",
)
DOWNSTREAM_CEILING: Final = MetricSpec(
    "rce_downstream_ceiling",
    "gauge",
    ("service",),
    "The fixed ceiling on our in-flight tasks per service: its Airflow pool's size, as last copied "
    "into the ledger (rce_lib.airflow_support.pool_ceilings); -1 when none is known.",
)
LEDGER_UP: Final = MetricSpec(
    "rce_ledger_up",
    "gauge",
    (),
    "1 when the exporter could read the ledger at this scrape, else 0.",
)

METRICS: Final[tuple[MetricSpec, ...]] = (
    PHASE_DURATION,
    PHASE_TOTAL,
    PHASE_RETRIES,
    SDDCS,
    SDDCS_IN_PHASE,
    PHASE_OLDEST_RUNNING,
    PHASE_MAX,
    GATE_DECISIONS,
    WAVE_RUNS,
    WAVE_HELD,
    DRIFT_TOTAL,
    DRIFT_OPEN,
    DOWNSTREAM_REQUESTS,
    DOWNSTREAM_DURATION,
    DOWNSTREAM_THROTTLED,
    DOWNSTREAM_LIMIT,
    DOWNSTREAM_IN_FLIGHT,
    DOWNSTREAM_CEILING,
    LEDGER_UP,
)


def series_names() -> frozenset[str]:
    """Every series name the exporter can expose."""
    return frozenset(n for spec in METRICS for n in spec.series_names)


# ---------------------------------------------------------------- bounded label values


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"


class Service(StrEnum):
    """Component services of the contract, plus `control` for reads and polls."""

    VCENTER = "vcenter"
    NSX = "nsx"
    ESX = "esx"
    CONTROL = "control"


PHASES: Final = frozenset(
    (
        "precheck",
        "snapshot",
        "upgrade_vcenter",
        "upgrade_nsx",
        "upgrade_hosts",
        "postcheck",
        "rollback",
        "done",
    )
)
SDDC_STATES: Final = frozenset(
    ("done", "running", "pending", "failed", "rolled_back", "skipped", "succeeded")
)
STATUSES: Final = frozenset(("pending", "running", "succeeded", "failed", "rolled_back", "skipped"))
# The contract's documented error codes (ErrorBody.code examples) and our own reason codes.
API_ERROR_CODES: Final = frozenset(
    (
        "OPERATION_IN_PROGRESS",
        "COMPONENT_ORDER",
        "ALREADY_AT_VERSION",
        "HOST_NOT_IN_MAINTENANCE",
        "CLUSTER_CAPACITY",
        "IDEMPOTENCY_KEY_REUSED",
        "UPGRADE_PATH_NOT_SUPPORTED",
        "RATE_LIMITED",
        "SERVICE_AT_CAPACITY",
    )
)
REASONS: Final = frozenset(r.value for r in Reason) | API_ERROR_CODES
GATE_DECISION_VALUES: Final = frozenset(("pass", "fail", "inconclusive", "hold"))
# WAVE_INCOMPLETE: the summary's own verdict when SDDCs ended neither done nor rolled back.
WAVE_RESULTS: Final = frozenset(("promoted", "WAVE_INCOMPLETE")) | frozenset(r.value for r in Reason)
HELD_BY: Final = frozenset(("kill_switch", "error_budget"))
DRIFT_KINDS: Final = frozenset(k.value for k in DriftKind)
DRIFT_REPAIRS: Final = frozenset(r.value for r in RepairKind)
DRIFT_OUTCOMES: Final = frozenset(("repaired", "flagged", "failed", "skipped"))
STATUS_CLASSES: Final = frozenset(("2xx", "3xx", "4xx", "5xx", "error"))
THROTTLE_CODES: Final = frozenset(("429", "503"))
SERVICES: Final = frozenset(s.value for s in Service)

#: Default bound per phase before an SDDC counts as stuck (seconds of real time).
DEFAULT_PHASE_MAX_SECONDS: Final[dict[str, float]] = {
    "precheck": 1800.0,
    "snapshot": 3600.0,
    "upgrade_vcenter": 3 * 3600.0,
    "upgrade_nsx": 2 * 3600.0,
    "upgrade_hosts": 12 * 3600.0,
    "postcheck": 1800.0,
    "rollback": 3 * 3600.0,
}


def bounded(value: object, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed`, else `other` (None and "" become `none`)."""
    if value is None or value == "":
        return NONE
    text = str(value)
    return text if text in allowed else OTHER


def status_class(status: int | None) -> str:
    """`2xx`..`5xx` for an HTTP status, `error` when no response came back."""
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx" if status >= 200 else "error"
