"""The benchmark's lower-bound arithmetic and fleet sizing (pure functions, no processes)."""

from __future__ import annotations

import pytest

from rce_lib.devenv.bench import fleet_size_for, host_chain_s, lower_bound
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
