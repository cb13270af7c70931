"""Fault injection settings (POST /sim/faults merges into them) and the seeded dice.

Request faults (error, throttle, latency, drop) only hit /api/ routes, never /sim/.
All random choices come from one random.Random seeded from the simulator seed, so a
given sequence of requests meets the same faults.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rce_lib.sim.config import RetryAfterFormat


class Faults(BaseModel):
    """Current faults. Every field has a harmless default."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of API requests answered 500.")
    throttle_rate: float = Field(default=0.0, ge=0, le=1, description="Share answered 503 + Retry-After.")
    throttle_retry_after_s: int = Field(default=1, ge=1)
    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="Share of connections closed unanswered.")
    mutations_only: bool = Field(default=False, description="Request faults only on POST/PUT.")

    task_failure_rate: float = Field(default=0.0, ge=0, le=1)
    task_failure_retryable: bool = True
    fail_next: dict[str, int] = Field(default_factory=dict, description="Task type -> fail the next N.")
    fail_sddc_ids: list[str] = Field(default_factory=list)
    fail_task_types: list[str] = Field(
        default_factory=list, description="Restricts fail_sddc_ids to these types (empty: all)."
    )

    unhealthy_release: str | None = None
    unhealthy_sddc_ids: list[str] = Field(default_factory=list)
    degraded_release: str | None = Field(
        default=None, description="SDDCs at this release stay HEALTHY but read worse by the amounts below."
    )
    degraded_error_rate: float = Field(default=0.03, ge=0, le=0.5)
    degraded_latency_ms: float = Field(default=0.0, ge=0)
    malformed_health_sddc_ids: list[str] = Field(
        default_factory=list,
        description="Health of these SDDCs comes without error_rate (breaks the contract).",
    )
    forbidden_sddc_ids: list[str] = Field(default_factory=list)
    malformed_sddc_ids: list[str] = Field(
        default_factory=list,
        description="GET of these SDDCs answers a body that breaks the contract (bad version, no hosts).",
    )
    extra_fields: bool = False
    unknown_task_status_rate: float = Field(default=0.0, ge=0, le=1)
    unknown_task_status: str = "PAUSED"
    retry_after_format: RetryAfterFormat | None = None


HOST_ERROR = "HOST_UNREACHABLE"
UPGRADE_ERROR = "UPGRADE_FAILED"


class FaultEngine:
    """Holds the Faults and rolls the dice for them."""

    def __init__(self, seed: int, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(seed)

    def merge(self, patch: dict[str, Any]) -> Faults:
        """Merge a partial JSON patch; `{"reset": true}` starts from the defaults first."""
        patch = dict(patch)
        base = {} if patch.pop("reset", False) else self.faults.model_dump()
        self.faults = Faults.model_validate({**base, **patch})
        return self.faults

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def request_fault(self, mutating: bool) -> Literal["drop", "error", "throttle"] | None:
        f = self.faults
        if f.mutations_only and not mutating:
            return None
        if self.roll(f.drop_rate):
            return "drop"
        if self.roll(f.error_rate):
            return "error"
        if self.roll(f.throttle_rate):
            return "throttle"
        return None

    def latency_s(self) -> float:
        f = self.faults
        if f.latency_ms <= 0 and f.latency_jitter_ms <= 0:
            return 0.0
        return (f.latency_ms + self.rng.uniform(0, f.latency_jitter_ms)) / 1000.0

    def planned_task_error(self, task_type: str, sddc_id: str, host_task: bool) -> dict[str, Any] | None:
        """Decide at start whether this task will end FAILED, and with which error."""
        f = self.faults
        fail = False
        if f.fail_next.get(task_type, 0) > 0:
            f.fail_next[task_type] -= 1
            fail = True
        else:
            typed = not f.fail_task_types or task_type in f.fail_task_types
            targeted = sddc_id in f.fail_sddc_ids and typed
            fail = targeted or self.roll(f.task_failure_rate)
        if not fail:
            return None
        code = HOST_ERROR if host_task else UPGRADE_ERROR
        return {
            "code": code,
            "message": f"simulated failure of {task_type} on {sddc_id}",
            "retryable": f.task_failure_retryable,
        }

    def unhealthy(self, sddc_id: str, version: str) -> bool:
        f = self.faults
        return sddc_id in f.unhealthy_sddc_ids or (
            f.unhealthy_release is not None and f.unhealthy_release == version
        )
