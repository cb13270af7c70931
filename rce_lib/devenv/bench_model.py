"""The pure part of `rce bench`: its fixed settings, the fleet it runs on and the bounds.

Nothing here starts a process or talks HTTP, so the settings, the lower bound they give
for a wave of N SDDCs and the batch-serial baseline's own ideal can be computed (and
unit-tested) without Airflow: `standard_bound(200)` is what the bench will print as its
LOWER BOUND for N = 200 on the default seed.

The fixed settings (issue 6) make every figure comparable between runs: durations in
real-world proportions (the simulator's defaults), one simulated minute per real second
(time scale 60), and service capacities chosen so that the N = 200 wave's lower bound is
about 5 minutes (see `STANDARD_CAPACITY`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rce_lib.api.models import TaskType
from rce_lib.devenv.bench_pressure import CapacityChange, parse_change
from rce_lib.sim.config import DEFAULT_RELEASES

SERVICES = ("vcenter", "nsx", "esx")
SOURCE_VERSION = "1.25.0"
TARGET_VERSION = "1.26.0"

# The per-SDDC task chain the engine runs, by service (see rce_lib/api/services.py).
VCENTER_CHAIN = ("PRECHECK", "SNAPSHOT", "UPGRADE_VCENTER")
NSX_CHAIN = ("UPGRADE_NSX",)

#: One simulated minute per real second.
STANDARD_TIME_SCALE = 60.0
STANDARD_SEED = 42
#: Simulated seconds per task type: the simulator's defaults, which are the issue's real-world
#: proportions (precheck 2 min, snapshot 5, vCenter 45, NSX 30, host maintenance 3, host
#: upgrade 20, rollback 40). A copy, so that the bench's standard cannot drift with them silently.
STANDARD_DURATIONS: dict[str, float] = {
    "PRECHECK": 120,
    "SNAPSHOT": 300,
    "UPGRADE_VCENTER": 2700,
    "UPGRADE_NSX": 1800,
    "HOST_MAINTENANCE": 180,
    "UPGRADE_HOST": 1200,
    "ROLLBACK": 2400,
}
#: Fleet-wide concurrent tasks per service: the simulator's default proportions (20/10/40)
#: times 3. On the seed-42 fleet the N = 200 wave's bound is then 304 s (NSX-bound: 200 x 30
#: sim-min / 30 plus the vCenter chain ahead and the smallest SDDC's hosts after), with
#: vCenter (255 s) and ESX (279 s) close behind, so a scheduler has to keep all three busy.
STANDARD_CAPACITY: dict[str, int] = {"vcenter": 60, "nsx": 30, "esx": 120}
#: Airflow's metadata DB and the ledger: standalone's embedded default (the figures of every
#: earlier round); `postgres` is what a deployment runs (docker-compose.yaml, README's Helm values).
STANDARD_METADATA_DB: Literal["sqlite", "postgres"] = "sqlite"
#: The issue's wave sizes.
STANDARD_SIZES = (50, 200, 1000)

#: Where each setting comes from on the command line (for error messages).
FLAGS: dict[str, str] = {
    "sddcs": "--sddcs",
    "time_scale": "--time-scale",
    "seed": "--seed",
    "capacity": "--capacity",
    "durations_s": "--duration",
    "max_parallel": "--max-parallel",
    "baseline_batch": "--baseline-batch",
    "timeout_s": "--timeout",
    "capacity_change": "--capacity-change",
}


class BenchSettings(BaseModel):
    """One benchmark run's settings, validated before anything starts (bad ones exit 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sddcs: int = Field(ge=1, description="SDDCs in the wave")
    time_scale: float = Field(default=STANDARD_TIME_SCALE, gt=0, allow_inf_nan=False)
    seed: int = STANDARD_SEED
    capacity: dict[str, int] = Field(default_factory=lambda: dict(STANDARD_CAPACITY))
    durations_s: dict[str, float] = Field(default_factory=lambda: dict(STANDARD_DURATIONS))
    max_parallel: int | None = Field(default=None, ge=1)
    baseline: bool = True
    baseline_batch: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    capacity_change: str | None = Field(default=None, description="SERVICE=N@SECONDS (bench_pressure)")
    metadata_db: Literal["sqlite", "postgres"] = Field(
        default=STANDARD_METADATA_DB, description="Airflow's metadata DB and the ledger's"
    )

    @field_validator("capacity_change")
    @classmethod
    def _valid_change(cls, value: str | None) -> str | None:
        if value is not None:
            parse_change(value)
        return value

    @property
    def change(self) -> CapacityChange | None:
        return None if self.capacity_change is None else parse_change(self.capacity_change)

    @field_validator("capacity", mode="before")
    @classmethod
    def _fill_capacity(cls, value: Any) -> Any:
        """Overrides name some services; the others keep the standard capacity."""
        if not isinstance(value, Mapping):
            return value
        unknown = sorted(set(value) - set(SERVICES))
        if unknown:
            raise ValueError(f"unknown service(s) {', '.join(unknown)}; expected {', '.join(SERVICES)}")
        return {**STANDARD_CAPACITY, **value}

    @field_validator("capacity")
    @classmethod
    def _positive_capacity(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"capacity must be >= 1 per service, got {_kv(bad)}")
        return value

    @field_validator("durations_s", mode="before")
    @classmethod
    def _fill_durations(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        known = {t.value for t in TaskType} - {"UNKNOWN"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown task type(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}"
            )
        return {**STANDARD_DURATIONS, **value}

    @field_validator("durations_s")
    @classmethod
    def _positive_durations(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"durations must be finite and > 0 simulated seconds, got {_kv(bad)}")
        return value

    @model_validator(mode="after")
    def _batch_fits(self) -> BenchSettings:
        if self.baseline_batch is not None and self.baseline_batch > self.sddcs:
            raise ValueError(
                f"--baseline-batch {self.baseline_batch} is larger than the wave (--sddcs {self.sddcs})"
            )
        return self

    @property
    def wave_parallel(self) -> int:
        """The wave's max_parallel: all SDDCs at once unless overridden."""
        return self.max_parallel or self.sddcs

    @property
    def batch_size(self) -> int:
        """The baseline's `serial: k`: default the NSX capacity (the smallest service capacity in
        the standard settings, so no batch is ever refused for capacity), at most the wave."""
        return self.baseline_batch or min(self.capacity["nsx"], self.sddcs)

    def deviations(self) -> list[str]:
        """What differs from the fixed benchmark settings (empty: a standard run)."""
        out: list[str] = []
        if self.time_scale != STANDARD_TIME_SCALE:
            out.append(f"time scale {self.time_scale:g} (standard {STANDARD_TIME_SCALE:g})")
        if self.seed != STANDARD_SEED:
            out.append(f"seed {self.seed} (standard {STANDARD_SEED})")
        if self.capacity != STANDARD_CAPACITY:
            changed = {k: v for k, v in self.capacity.items() if STANDARD_CAPACITY[k] != v}
            out.append(f"capacity {_kv(changed)} (standard {_kv(STANDARD_CAPACITY)})")
        if self.durations_s != STANDARD_DURATIONS:
            changed_d = {k: v for k, v in self.durations_s.items() if STANDARD_DURATIONS[k] != v}
            out.append(f"durations {_kv(changed_d)} sim-s (standard: the simulator's defaults)")
        if self.change is not None:
            out.append(self.change.describe())
        if self.wave_parallel != self.sddcs:
            out.append(f"max_parallel {self.wave_parallel} (standard: the whole wave, {self.sddcs})")
        if self.metadata_db != STANDARD_METADATA_DB:
            out.append(f"metadata DB {self.metadata_db} (standard: {STANDARD_METADATA_DB}, standalone's own)")
        return out

    def describe(self) -> str:
        """One line: the settings the run uses."""
        return (
            f"time scale {self.time_scale:g} sim-s per real s, seed {self.seed}, "
            f"capacity {_kv(self.capacity)}, durations (sim-s) {_kv(self.durations_s)}, "
            f"metadata DB and ledger {self.metadata_db}"
        )


def _kv(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def validation_message(err: ValidationError) -> str:
    """A pydantic error as one line naming the command-line flag, not the field."""
    parts = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = FLAGS.get(field, field)
        got = "" if field in ("capacity", "durations_s") or not e["loc"] else f" (got {e.get('input')!r})"
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{flag}: {msg}{got}" if flag else msg)
    return "; ".join(parts)


# ============================================================== the fleet


def fleet_size_for(n: int, source_version: str = SOURCE_VERSION) -> int:
    """Smallest simulated fleet holding `n` SDDCs at `source_version` (rce_lib/sim/fleet.py rule)."""
    from rce_lib.sim.fleet import version_for_index

    size, found = 0, 0
    while found < n:
        size += 1
        if version_for_index(size, DEFAULT_RELEASES) == source_version:
            found += 1
    return size


def cohort_shapes(n: int, seed: int = STANDARD_SEED) -> list[list[int]]:
    """Hosts per cluster (largest first) of each SDDC the bench's wave takes, by id.

    The bench's simulator holds exactly `fleet_size_for(n)` SDDCs, so its wave (selector:
    the source version, size n) is every SDDC at the source version: the same fleet that
    `rce sim serve --seed seed --size fleet_size_for(n)` generates, with no process started.
    """
    from rce_lib.sim.fleet import generate_fleet

    shapes = []
    for sddc in generate_fleet(seed, fleet_size_for(n), DEFAULT_RELEASES):
        if sddc.version == SOURCE_VERSION:
            per_cluster = Counter(h.cluster_id for h in sddc.hosts)
            shapes.append(sorted(per_cluster.values(), reverse=True))
    return shapes


# ============================================================== lower bound


@dataclass(frozen=True)
class Bound:
    """The lower bounds of a wave's makespan, in simulated seconds."""

    critical_path_engine_s: float  # longest SDDC, hosts one at a time per SDDC (what rce does)
    critical_path_contract_s: float  # longest SDDC, clusters in parallel (what the contract allows)
    service_work_s: dict[str, float]  # total task-seconds per service
    service_plain_s: dict[str, float]  # work / capacity
    service_headtail_s: dict[str, float]  # min head + work / capacity + min tail (contract order)
    lower_bound_s: float  # max(critical path contract, every service bound): the true bound
    engine_bound_s: float  # the same with the engine's host order (hosts sequential per SDDC)
    binding: str  # which term gives lower_bound_s

    @property
    def max_utilisation(self) -> dict[str, float]:
        """The most any schedule can keep each service busy (work / (capacity x makespan)): the
        makespan is never below the bound, whose head and tail no service can fill."""
        if self.lower_bound_s <= 0:
            return dict.fromkeys(self.service_plain_s, 0.0)
        return {s: plain / self.lower_bound_s for s, plain in self.service_plain_s.items()}


def host_chain_s(durations: Mapping[str, float]) -> float:
    """One host: enter maintenance, upgrade, exit maintenance."""
    return 2 * float(durations["HOST_MAINTENANCE"]) + float(durations["UPGRADE_HOST"])


def sddc_chain_s(clusters: Sequence[int], durations: Mapping[str, float]) -> float:
    """One SDDC alone with its hosts one at a time (what the engine and the baseline do)."""
    d = {k: float(v) for k, v in durations.items()}
    upfront = sum(d[t] for t in VCENTER_CHAIN) + sum(d[t] for t in NSX_CHAIN)
    return upfront + host_chain_s(d) * sum(clusters)


def lower_bound(
    sddcs: Sequence[Sequence[int]], durations: Mapping[str, float], capacity: Mapping[str, int]
) -> Bound:
    """Lower bounds of the makespan of upgrading `sddcs` (each a list of hosts per cluster).

    * critical path: one SDDC alone, every task in its order. Engine order runs
      all hosts of an SDDC one after the other; the contract allows one host per
      cluster at a time, clusters in parallel (the true bound uses that).
    * service work: a service with capacity c cannot finish W task-seconds in
      less than W / c. Tighter and still valid: no task of the service can start
      before the shortest chain ahead of it (head) and the wave cannot end before
      the shortest chain after it (tail): min head + W / c + min tail.
    """
    if not sddcs:
        zero = dict.fromkeys(SERVICES, 0.0)
        return Bound(0.0, 0.0, zero, zero, zero, 0.0, 0.0, "empty")
    d = {k: float(v) for k, v in durations.items()}
    host = host_chain_s(d)
    vc = sum(d[t] for t in VCENTER_CHAIN)
    nsx = sum(d[t] for t in NSX_CHAIN)
    seq_hosts = [host * sum(clusters) for clusters in sddcs]
    par_hosts = [host * max(clusters, default=0) for clusters in sddcs]
    cp_engine = vc + nsx + max(seq_hosts)
    cp_contract = vc + nsx + max(par_hosts)
    work = {
        "vcenter": vc * len(sddcs),
        "nsx": nsx * len(sddcs),
        "esx": host * sum(sum(clusters) for clusters in sddcs),
    }
    plain = {s: work[s] / max(1, int(capacity[s])) for s in SERVICES}

    def headtail(tails: list[float]) -> dict[str, float]:
        # vcenter: first task has no head; the last vcenter task (UPGRADE_VCENTER) is followed by
        # NSX and the hosts. nsx: after the vcenter chain, before the hosts. esx: after both.
        return {
            "vcenter": plain["vcenter"] + nsx + min(tails),
            "nsx": vc + plain["nsx"] + min(tails),
            "esx": (vc + nsx + plain["esx"]) if work["esx"] else 0.0,
        }

    ht_contract = headtail(par_hosts)
    ht_engine = headtail(seq_hosts)
    terms = {"critical path (longest SDDC, clusters in parallel)": cp_contract}
    terms.update({f"{s} work/capacity + head + tail": ht_contract[s] for s in SERVICES})
    binding = max(terms, key=lambda k: terms[k])
    engine = max(cp_engine, *ht_engine.values())
    return Bound(
        critical_path_engine_s=cp_engine,
        critical_path_contract_s=cp_contract,
        service_work_s=work,
        service_plain_s=plain,
        service_headtail_s=ht_contract,
        lower_bound_s=terms[binding],
        engine_bound_s=engine,
        binding=binding,
    )


def standard_bound(n: int, settings: BenchSettings | None = None) -> Bound:
    """The LOWER BOUND the bench prints for a wave of `n` on its fleet, computed offline."""
    s = settings or BenchSettings(sddcs=n)
    return lower_bound(cohort_shapes(n, s.seed), s.durations_s, s.capacity)


def batch_serial_ideal_s(
    sddcs: Sequence[Sequence[int]], durations: Mapping[str, float], batch_size: int
) -> float:
    """The batch-serial baseline with no overhead at all: batches of `batch_size` in order,
    each as long as its slowest member (hosts one at a time), no capacity wait (simulated s)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return sum(
        max(sddc_chain_s(clusters, durations) for clusters in sddcs[i : i + batch_size])
        for i in range(0, len(sddcs), batch_size)
    )
