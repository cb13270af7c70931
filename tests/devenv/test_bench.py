"""The benchmark's fixed settings, lower-bound arithmetic and fleet sizing (pure functions, no processes)."""

from __future__ import annotations

import pytest

from rce_lib.devenv.bench import fleet_size_for, host_chain_s, lower_bound
from rce_lib.devenv.bench_model import (
    STANDARD_CAPACITY,
    STANDARD_DURATIONS,
    STANDARD_SEED,
    STANDARD_SIZES,
    STANDARD_TIME_SCALE,
    BenchSettings,
    batch_serial_ideal_s,
    cohort_shapes,
    standard_bound,
)
from rce_lib.sim.config import DEFAULT_CAPACITY, DEFAULT_DURATIONS, DEFAULT_RELEASES
from rce_lib.sim.fleet import version_for_index

D = {
    "PRECHECK": 100,
    "SNAPSHOT": 200,
    "UPGRADE_VCENTER": 700,  # vcenter chain 1000
    "UPGRADE_NSX": 500,
    "HOST_MAINTENANCE": 50,
    "UPGRADE_HOST": 400,  # host chain 500
    "ROLLBACK": 999,
}


def test_host_chain_is_enter_upgrade_exit() -> None:
    assert host_chain_s(D) == 500


def test_single_sddc_is_its_critical_path() -> None:
    bound = lower_bound([[2, 1]], D, {"vcenter": 5, "nsx": 5, "esx": 5})
    assert bound.critical_path_engine_s == 1000 + 500 + 3 * 500
    assert bound.critical_path_contract_s == 1000 + 500 + 2 * 500
    assert bound.lower_bound_s == 2500
    assert bound.engine_bound_s == 3000
    assert bound.binding.startswith("critical path")


def test_service_work_over_capacity_binds_for_big_waves() -> None:
    sddcs = [[2]] * 10
    bound = lower_bound(sddcs, D, {"vcenter": 10, "nsx": 1, "esx": 10})
    assert bound.service_work_s == {"vcenter": 10_000, "nsx": 5_000, "esx": 10_000}
    assert bound.service_plain_s == {"vcenter": 1_000, "nsx": 5_000, "esx": 1_000}
    # nsx: cannot start before one vcenter chain (1000), and the last NSX upgrade
    # is followed by at least one SDDC's hosts (2 x 500)
    assert bound.service_headtail_s["nsx"] == 1000 + 5000 + 1000
    assert bound.lower_bound_s == 7000
    assert bound.binding == "nsx work/capacity + head + tail"
    # every term is a lower bound on its own: the result is their max
    assert bound.lower_bound_s >= max(bound.critical_path_contract_s, *bound.service_plain_s.values())


def test_esx_bound_uses_every_host_and_its_head() -> None:
    sddcs = [[4, 4], [1]]
    bound = lower_bound(sddcs, D, {"vcenter": 100, "nsx": 100, "esx": 1})
    assert bound.service_work_s["esx"] == 9 * 500
    assert bound.service_headtail_s["esx"] == 1000 + 500 + 4500
    assert bound.lower_bound_s == 6000


def test_engine_bound_never_below_contract_bound() -> None:
    for sddcs in ([[3, 3]], [[1], [2, 2, 2]], [[4]] * 7):
        bound = lower_bound(sddcs, DEFAULT_DURATIONS, DEFAULT_CAPACITY)
        assert bound.engine_bound_s >= bound.lower_bound_s


def test_empty_wave() -> None:
    assert lower_bound([], D, {"vcenter": 1, "nsx": 1, "esx": 1}).lower_bound_s == 0


@pytest.mark.parametrize("n", [1, 10, 17, 100])
def test_fleet_size_holds_exactly_enough_upgradable_sddcs(n: int) -> None:
    size = fleet_size_for(n)
    versions = [version_for_index(i, DEFAULT_RELEASES) for i in range(1, size + 1)]
    assert versions.count("1.25.0") == n
    assert versions[-1] == "1.25.0"


# ------------------------------------------------------------------ the fixed settings


def test_standard_durations_are_the_simulators_and_the_issues_proportions() -> None:
    minutes = {
        "PRECHECK": 2,
        "SNAPSHOT": 5,
        "UPGRADE_VCENTER": 45,
        "UPGRADE_NSX": 30,
        "HOST_MAINTENANCE": 3,
        "UPGRADE_HOST": 20,
        "ROLLBACK": 40,
    }
    assert {k: v / 60 for k, v in STANDARD_DURATIONS.items()} == minutes
    assert STANDARD_DURATIONS == DEFAULT_DURATIONS
    assert STANDARD_TIME_SCALE == 60  # one simulated minute per real second


def test_standard_capacities_make_the_n200_bound_about_five_minutes() -> None:
    """The issue: capacities such that the N = 200 wave's ideal lower bound is about 5 minutes."""
    settings = BenchSettings(sddcs=200)
    assert settings.capacity == STANDARD_CAPACITY == {"vcenter": 60, "nsx": 30, "esx": 120}
    bound = standard_bound(200)
    real_s = bound.lower_bound_s / STANDARD_TIME_SCALE
    assert 270 <= real_s <= 330
    assert real_s == 304  # the NSX term: 30 + 200 x 30 / 30 + 52 (vCenter chain, smallest SDDC's hosts)
    assert bound.binding == "nsx work/capacity + head + tail"
    # every service is close to binding: a scheduler must keep all three busy
    assert all(v / 60 > 250 for v in bound.service_headtail_s.values())


def test_standard_bounds_of_the_issues_sizes() -> None:
    real = {n: standard_bound(n).lower_bound_s / STANDARD_TIME_SCALE for n in STANDARD_SIZES}
    assert real == {50: 186, 200: 304, 1000: 1104}
    assert standard_bound(50).binding.startswith("critical path")


def test_utilisation_no_schedule_can_beat() -> None:
    """Work / (capacity x the lower bound): the bound's head (the vCenter chain before the first
    NSX task) and tail (the hosts after the last) are time no service can fill. At N = 200 that is
    66% for NSX, so the issue's 90% needs a wave of about 1000; at 1.15x the bound, 57%."""
    best = {n: standard_bound(n).max_utilisation for n in STANDARD_SIZES}
    assert round(best[200]["nsx"], 3) == round(200 / 304, 3)
    assert max(best[200].values()) == best[200]["nsx"] < 0.90
    assert max(best[50].values()) < 0.30  # the critical path binds: the services idle most of it
    assert best[1000]["nsx"] > 0.90
    assert all(0 < u <= 1 for per_n in best.values() for u in per_n.values())
    assert lower_bound([], {}, {}).max_utilisation == dict.fromkeys(("vcenter", "nsx", "esx"), 0.0)


def test_cohort_shapes_are_the_benchs_wave() -> None:
    shapes = cohort_shapes(200)
    assert len(shapes) == 200
    assert all(1 <= len(s) <= 2 and all(2 <= h <= 4 for h in s) for s in shapes)
    assert shapes == cohort_shapes(200, STANDARD_SEED)
    assert shapes != cohort_shapes(200, STANDARD_SEED + 1)


def test_batch_serial_ideal_sums_the_slowest_member_of_each_batch() -> None:
    sddcs = [[2], [1], [4], [1, 1]]
    one = {k: D[k] for k in D}
    # chains: 1000 + 500 + 500 x hosts -> 2500, 2000, 3500, 2500
    assert batch_serial_ideal_s(sddcs, one, 2) == 2500 + 3500
    assert batch_serial_ideal_s(sddcs, one, 4) == 3500
    assert batch_serial_ideal_s(sddcs, one, 1) == 2500 + 2000 + 3500 + 2500
    with pytest.raises(ValueError):
        batch_serial_ideal_s(sddcs, one, 0)


def test_settings_report_what_is_not_standard() -> None:
    assert BenchSettings(sddcs=50).deviations() == []
    assert BenchSettings(sddcs=50).batch_size == 30  # the NSX capacity
    assert BenchSettings(sddcs=10).batch_size == 10  # at most the wave
    odd = BenchSettings(
        sddcs=50,
        time_scale=120,
        seed=7,
        capacity={"nsx": 5},
        durations_s={"UPGRADE_HOST": 60},
        max_parallel=5,
        metadata_db="postgres",
    )
    text = " | ".join(odd.deviations())
    for part in (
        "time scale 120",
        "seed 7",
        "capacity nsx 5",
        "UPGRADE_HOST 60",
        "max_parallel 5",
        "metadata DB postgres",
    ):
        assert part in text
    assert odd.describe().endswith("metadata DB and ledger postgres")
    assert BenchSettings(sddcs=50).describe().endswith("metadata DB and ledger sqlite")
    with pytest.raises(ValueError, match="metadata_db"):
        BenchSettings(sddcs=50, metadata_db="mysql")  # type: ignore[arg-type]
    assert odd.capacity == {"vcenter": 60, "nsx": 5, "esx": 120}
    assert odd.batch_size == 5


def test_a_slow_scheduler_is_not_taken_for_a_stuck_one() -> None:
    """Airflow calls a scheduler unhealthy 30 s after its last heartbeat; a big run's passes
    take longer than that while it makes progress. Only a heartbeat older than STALL_S (or
    none at all) stops the bench."""
    from datetime import UTC, datetime, timedelta

    from rce_lib.devenv.bench import STALL_S, stalled

    now = datetime(2026, 11, 27, 17, 50, tzinfo=UTC)

    def health(scheduler_age: float | None, triggerer_status: str = "healthy") -> dict[str, object]:
        beat = None if scheduler_age is None else (now - timedelta(seconds=scheduler_age)).isoformat()
        return {
            "metadatabase": {"status": "healthy"},
            "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": beat},
            "triggerer": {"status": triggerer_status, "latest_triggerer_heartbeat": now.isoformat()},
        }

    assert stalled(health(54.0), now) == {}  # a long pass: slow, not stuck
    assert stalled(health(STALL_S - 1), now) == {}
    assert stalled(health(STALL_S + 30), now) == {"scheduler": pytest.approx(STALL_S + 30)}
    assert stalled(health(None), now) == {"scheduler": None}
    # a triggerer Airflow calls unhealthy whose heartbeat is fresh is not stuck either
    assert stalled(health(10.0, triggerer_status="unhealthy"), now) == {}
