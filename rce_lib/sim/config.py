"""Simulator settings: one pydantic model, loadable from YAML, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

RetryAfterFormat = Literal["seconds", "http-date", "mixed"]

# Simulated seconds per task type, in real-world proportions.
DEFAULT_DURATIONS: dict[str, float] = {
    "PRECHECK": 120,
    "SNAPSHOT": 300,
    "UPGRADE_VCENTER": 2700,
    "UPGRADE_NSX": 1800,
    "HOST_MAINTENANCE": 180,
    "UPGRADE_HOST": 1200,
    "ROLLBACK": 2400,
}

# Max concurrent non-terminal tasks per service, fleet-wide.
DEFAULT_CAPACITY: dict[str, int] = {"vcenter": 20, "nsx": 10, "esx": 40}


class Bucket(BaseModel):
    """A token bucket: `rate` requests per second sustained, `burst` at once."""

    model_config = ConfigDict(extra="forbid")
    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class ReleaseSpec(BaseModel):
    """One release: its component builds and the releases that may upgrade straight to it."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    vcenter: str
    nsx: str
    esx: str
    upgrade_from: list[str] = Field(default_factory=list)


DEFAULT_RELEASES: list[ReleaseSpec] = [
    ReleaseSpec(version="1.24.0", vcenter="8.0.2-22617221", nsx="4.1.2-22589037", esx="8.0.2-22380479"),
    ReleaseSpec(
        version="1.25.0",
        vcenter="8.0.3-24022515",
        nsx="4.2.0-23912316",
        esx="8.0.3-24022510",
        upgrade_from=["1.24.0"],
    ),
    ReleaseSpec(
        version="1.26.0",
        vcenter="8.0.3-24305161",
        nsx="4.2.1-24304122",
        esx="8.0.3-24280767",
        upgrade_from=["1.25.0"],
    ),
]


class SimConfig(BaseModel):
    """Everything that shapes the simulator. Persisted fleet state wins over seed/size."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8600
    seed: int = 42
    size: int = Field(default=24, ge=0)
    time_scale: float = Field(default=60.0, gt=0, description="Simulated seconds per real second.")
    token: str = "sim-token"
    state_dir: Path | None = None

    durations_s: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    queued_s: float = Field(default=0.05, ge=0, description="Real seconds a new task stays QUEUED (at most).")
    capacity: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_CAPACITY))

    rate_limits_enabled: bool = True
    mutation_rate: dict[str, Bucket] = Field(
        default_factory=lambda: {s: Bucket(rate=100, burst=200) for s in ("vcenter", "nsx", "esx")}
    )
    read_rate: Bucket = Field(default_factory=lambda: Bucket(rate=5000, burst=10000))
    retry_after_format: RetryAfterFormat = "seconds"

    releases: list[ReleaseSpec] = Field(default_factory=lambda: list(DEFAULT_RELEASES))
    persist_interval_s: float = Field(default=0.2, gt=0)
    details_max: int = Field(default=200, ge=1, description="Bound of each counters details list.")
    retry_after_tolerance_s: float = Field(default=0.05, ge=0)
    task_retention_s: float = Field(default=7 * 86400, gt=0)

    def real_duration(self, task_type: str) -> float:
        """Real seconds a task of this type takes: simulated seconds / time scale."""
        return float(self.durations_s.get(task_type, 60.0)) / self.time_scale


def load_config(path: Path | None, overrides: dict[str, Any]) -> SimConfig:
    """YAML file (optional) first, then CLI overrides that were actually given."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "durations_s" in data:
        data["durations_s"] = {**DEFAULT_DURATIONS, **data["durations_s"]}
    if "capacity" in data:
        data["capacity"] = {**DEFAULT_CAPACITY, **data["capacity"]}
    return SimConfig.model_validate(data)
