"""The bench's capacity change: lower (or raise) one service's capacity mid-run, and watch
what the engine does about it (issue 6: adaptive concurrency, rce_lib.pacing).

`--capacity-change nsx=10@90` has the simulator run at most 10 NSX tasks from 90 real
seconds after the trigger (`POST /sim/faults {"capacity": ...}`). A probe samples, every
couple of seconds, the simulator's tasks in flight and capacity refusals per service and
the engine's adaptive limit and slots (the ledger's `rce_service_limit`/`rce_service_slot`),
so the table can show that refusals stay bounded and the work in flight follows the new
capacity instead of being retried into it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CHANGE_RE = re.compile(r"^(vcenter|nsx|esx)=(\d+)@(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class CapacityChange:
    service: str
    capacity: int
    at_s: float

    def describe(self) -> str:
        return f"{self.service} capacity -> {self.capacity} at {self.at_s:g} s after the trigger"


def parse_change(value: str) -> CapacityChange:
    """`SERVICE=N@SECONDS`; ValueError naming what is wrong."""
    match = CHANGE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"--capacity-change: expected SERVICE=N@SECONDS with SERVICE vcenter|nsx|esx, got {value!r}"
        )
    service, capacity, at_s = match.group(1), int(match.group(2)), float(match.group(3))
    if capacity < 1 or at_s <= 0:
        raise ValueError(f"--capacity-change: capacity must be >= 1 and the time > 0, got {value!r}")
    return CapacityChange(service, capacity, at_s)


@dataclass(frozen=True)
class Sample:
    t: float  # real seconds since the trigger
    sim_in_flight: int
    refused_total: int  # the simulator's capacity 503s for the service so far
    limit: float | None  # the engine's adaptive limit (None: open)
    slots: int  # the engine's slots on the service


class PressureProbe:
    """Applies the change at its time and samples the service until stopped."""

    def __init__(
        self,
        change: CapacityChange,
        *,
        counters: Callable[[], Mapping[str, Any]],
        set_capacity: Callable[[str, int], None],
        pacing: Callable[[], Mapping[str, tuple[float | None, int]]],
        t0: float,
        interval: float = 2.0,
    ) -> None:
        self.change = change
        self._counters = counters
        self._set_capacity = set_capacity
        self._pacing = pacing
        self.t0 = t0
        self.interval = interval
        self.samples: list[Sample] = []
        self.applied_at: float | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pressure", daemon=True)

    def __enter__(self) -> PressureProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time() - self.t0
            if self.applied_at is None and now >= self.change.at_s:
                try:
                    self._set_capacity(self.change.service, self.change.capacity)
                    self.applied_at = now
                except Exception:
                    self.errors += 1
            try:
                self.samples.append(self._sample(now))
            except Exception:  # a missed sample is a gap, not a failed benchmark
                self.errors += 1
            self._stop.wait(self.interval)

    def _sample(self, now: float) -> Sample:
        service = self.change.service
        c = self._counters()
        limit, slots = self._pacing().get(service, (None, 0))
        return Sample(
            t=round(now, 2),
            sim_in_flight=int(c.get("concurrent", {}).get(service, {}).get("current", 0)),
            refused_total=int(c.get("capacity_503", {}).get(service, 0)),
            limit=limit,
            slots=slots,
        )


def summarize_pressure(probe: PressureProbe, *, mutating_calls: int) -> dict[str, Any]:
    """Refusals and work in flight before and after the change (JSON for the table)."""
    change, samples = probe.change, probe.samples
    at = probe.applied_at
    before = [s for s in samples if at is None or s.t < at]
    after = [s for s in samples if at is not None and s.t >= at]
    busy_after = [s for s in after if s.sim_in_flight > 0]
    refused = samples[-1].refused_total if samples else 0
    limits = [s.limit for s in after if s.limit is not None]
    first_closed = next((s.t for s in after if s.limit is not None), None)
    busy_mean = _mean(s.sim_in_flight for s in busy_after)
    return {
        "change": asdict(change),
        "applied_at_s": at,
        "samples": len(samples),
        "probe_errors": probe.errors,
        "capacity_refusals": refused,
        "capacity_refusals_share_of_mutating": refused / mutating_calls if mutating_calls else None,
        "mean_in_flight_before": _mean(s.sim_in_flight for s in before),
        "peak_in_flight_after": max((s.sim_in_flight for s in after), default=None),
        # while the service still had work of ours: does it run at the new capacity?
        "mean_in_flight_after_while_busy": busy_mean,
        "utilisation_of_new_capacity": None if busy_mean is None else busy_mean / change.capacity,
        "limit_closed_after_s": None if first_closed is None or at is None else round(first_closed - at, 1),
        "limit_min": min(limits) if limits else None,
        "limit_last": samples[-1].limit if samples else None,
        "timeline": [asdict(s) for s in _thin(samples, 40)],
    }


def _mean(values: Any) -> float | None:
    seq = list(values)
    return sum(seq) / len(seq) if seq else None


def _thin(samples: Sequence[Sample], most: int) -> list[Sample]:
    if len(samples) <= most:
        return list(samples)
    step = len(samples) / most
    return [samples[int(i * step)] for i in range(most)]
