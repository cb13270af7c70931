"""Fault injection settings (POST /sim/faults merges into them) and the seeded dice.

Request faults (error, throttle, latency, slow, drop, storm) only hit /api/ routes, never
/sim/. All random choices come from one random.Random seeded from the simulator seed, so a
given sequence of requests meets the same faults.

Storms: with `storm_every_s` and `storm_duration_s` set, the last `storm_duration_s` of
every `storm_every_s` (counted from when the storm settings were posted) answer EVERY API
request 429 with a Retry-After that ends at the storm's end.
"""

from __future__ import annotations

import math
import random
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    slow_rate: float = Field(default=0.0, ge=0, le=1, description="Share of API requests answered late.")
    slow_ms: float = Field(default=0.0, ge=0, description="How late a slow answer is.")
    storm_every_s: float = Field(default=0.0, ge=0, description="Period of 429 storms (0: none).")
    storm_duration_s: float = Field(default=0.0, ge=0, description="Length of each 429 storm.")
    mutations_only: bool = Field(default=False, description="Request faults only on POST/PUT.")
    echo_auth: bool = Field(
        default=False,
        description="Problem answers echo the request's Authorization header (a leaky server).",
    )

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
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Service -> fleet-wide capacity, overriding the configured one (lowered mid-run: "
        "tasks already running go on; new starts get 503 SERVICE_AT_CAPACITY until under it).",
    )
    extra_fields: bool = False
    unknown_task_status_rate: float = Field(default=0.0, ge=0, le=1)
    unknown_task_status: str = "PAUSED"
    retry_after_format: RetryAfterFormat | None = None

    @field_validator("capacity")
    @classmethod
    def _known_services(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - {"vcenter", "nsx", "esx"})
        if unknown:
            raise ValueError(f"capacity: unknown service(s) {unknown}; known: vcenter, nsx, esx")
        return value


HOST_ERROR = "HOST_UNREACHABLE"
UPGRADE_ERROR = "UPGRADE_FAILED"


class FaultEngine:
    """Holds the Faults and rolls the dice for them."""

    def __init__(self, seed: int, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.storm_anchor = time.time()

    def merge(self, patch: dict[str, Any]) -> Faults:
        """Merge a partial JSON patch; `{"reset": true}` starts from the defaults first."""
        patch = dict(patch)
        base = {} if patch.pop("reset", False) else self.faults.model_dump()
        self.faults = Faults.model_validate({**base, **patch})
        if "storm_every_s" in patch or "storm_duration_s" in patch:
            self.storm_anchor = time.time()
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
        """Delay before answering: the base latency (with jitter), plus `slow_ms` for a slow answer."""
        f = self.faults
        delay = 0.0
        if f.latency_ms > 0 or f.latency_jitter_ms > 0:
            delay = (f.latency_ms + self.rng.uniform(0, f.latency_jitter_ms)) / 1000.0
        if f.slow_ms > 0 and self.roll(f.slow_rate):
            delay += f.slow_ms / 1000.0
        return delay

    def storm_retry_after(self, now: float) -> int | None:
        """Whole seconds until the current 429 storm ends (at least 1), or None outside a storm."""
        f = self.faults
        every, duration = f.storm_every_s, min(f.storm_duration_s, f.storm_every_s)
        if every <= 0 or duration <= 0:
            return None
        into = (now - self.storm_anchor) % every
        if into < every - duration:
            return None
        return max(1, math.ceil(every - into))

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
