"""The bench's capacity change: applied at its time, sampled, and summed up honestly."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rce_lib.devenv.bench_model import BenchSettings
from rce_lib.devenv.bench_pressure import CapacityChange, PressureProbe, parse_change, summarize_pressure


def test_a_change_is_parsed_and_makes_the_run_non_standard() -> None:
    assert parse_change("nsx=10@90") == CapacityChange("nsx", 10, 90.0)
    assert parse_change(" esx=3@12.5 ") == CapacityChange("esx", 3, 12.5)
    settings = BenchSettings(sddcs=50, capacity_change="nsx=10@90")
    assert settings.change == CapacityChange("nsx", 10, 90.0)
    assert "nsx capacity -> 10 at 90 s after the trigger" in settings.deviations()
    assert BenchSettings(sddcs=50).change is None


@pytest.mark.parametrize("bad", ["nsx=10", "nsx@90", "ntp=1@9", "nsx=-1@9", "nsx=0@9", "nsx=2@0"])
def test_a_malformed_change_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--capacity-change"):
        parse_change(bad)


class FakeWorld:
    """The simulator's counters and the engine's limit, as a capacity change plays out."""

    def __init__(self) -> None:
        self.capacity: dict[str, int] = {}
        self.in_flight = 8
        self.refused = 0
        self.limit: float | None = None

    def counters(self) -> dict[str, Any]:
        if self.capacity:  # after the change: refusals, then the engine closes its limit
            self.refused += 0 if self.limit is not None else 2
            self.limit = 2.0 if self.refused >= 4 else None
            self.in_flight = 2 if self.limit is not None else self.in_flight
        return {"concurrent": {"nsx": {"current": self.in_flight}}, "capacity_503": {"nsx": self.refused}}

    def set_capacity(self, service: str, n: int) -> None:
        self.capacity[service] = n

    def pacing(self) -> dict[str, tuple[float | None, int]]:
        return {"nsx": (self.limit, self.in_flight)}


def test_the_probe_applies_the_change_on_time_and_sums_up_before_and_after() -> None:
    world = FakeWorld()
    probe = PressureProbe(
        CapacityChange("nsx", 2, 0.3),
        counters=world.counters,
        set_capacity=world.set_capacity,
        pacing=world.pacing,
        t0=time.time(),
        interval=0.05,
    )
    with probe:
        time.sleep(1.0)
    assert world.capacity == {"nsx": 2}
    assert probe.applied_at is not None and 0.3 <= probe.applied_at < 0.6
    summary = summarize_pressure(probe, mutating_calls=100)
    assert summary["capacity_refusals"] == 4 and summary["capacity_refusals_share_of_mutating"] == 0.04
    assert summary["mean_in_flight_before"] == 8
    assert summary["limit_min"] == 2.0 and summary["limit_last"] == 2.0
    assert summary["utilisation_of_new_capacity"] is not None and summary["utilisation_of_new_capacity"] < 1.5
    assert summary["limit_closed_after_s"] is not None and summary["limit_closed_after_s"] >= 0
    assert summary["probe_errors"] == 0 and len(summary["timeline"]) <= 40
