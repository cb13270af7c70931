"""Fleet generation is deterministic and shaped as the rest of the project expects (in-process)."""

from __future__ import annotations

import re
from collections import Counter

from rce_lib.sim.config import DEFAULT_RELEASES, SimConfig
from rce_lib.sim.fleet import generate_fleet
from rce_lib.sim.state import FleetState


def test_same_seed_same_fleet_other_seed_differs() -> None:
    a = generate_fleet(42, 40, DEFAULT_RELEASES)
    b = generate_fleet(42, 40, DEFAULT_RELEASES)
    c = generate_fleet(43, 40, DEFAULT_RELEASES)
    assert [s.to_row() for s in a] == [s.to_row() for s in b]
    assert [s.to_row() for s in a] != [s.to_row() for s in c]


def test_fleet_shape() -> None:
    fleet = generate_fleet(42, 200, DEFAULT_RELEASES)
    versions = Counter(s.version for s in fleet)
    assert versions == {"1.25.0": 170, "1.24.0": 20, "1.26.0": 10}
    builds = {r.version: r for r in DEFAULT_RELEASES}
    for sddc in fleet:
        assert re.fullmatch(r"[a-z0-9-]{1,64}", sddc.id)
        assert sddc.labels["tier"] in ("gold", "silver", "bronze") and sddc.labels["env"] in (
            "prod",
            "staging",
        )
        clusters = Counter(h.cluster_id for h in sddc.hosts)
        assert 1 <= len(clusters) <= 2 and all(2 <= n <= 4 for n in clusters.values())
        assert all(re.fullmatch(r"[a-z0-9-]{1,64}", h.id) and h.id.startswith(sddc.id) for h in sddc.hosts)
        assert {h.version for h in sddc.hosts} == {builds[sddc.version].esx}
        assert sddc.vcenter == builds[sddc.version].vcenter and sddc.nsx == builds[sddc.version].nsx
    assert 0 < sum(s.maintenance_window is None for s in fleet) < 200
    assert 0 < sum(s.labels.get("canary") == "true" for s in fleet) <= 20
    assert len({s.region for s in fleet}) == 4


def test_small_fleet_has_four_at_1_25() -> None:
    fleet = generate_fleet(42, 6, DEFAULT_RELEASES)
    assert sum(s.version == "1.25.0" for s in fleet) >= 4


def test_advance_applies_completions_in_time_order() -> None:
    state = FleetState(SimConfig(size=2, time_scale=1.0))
    state.bootstrap()
    sddc = state.sddcs["sddc-0001"]
    t0 = 1_000_000.0
    vc = state.create_task(sddc, "UPGRADE_VCENTER", t0, params={"target_version": "1.26.0"})
    snap = state.create_task(sddc, "SNAPSHOT", t0, params={})
    state.advance(t0 + 301)  # the snapshot (300 s) ended, vcenter (2700 s) did not
    assert state.tasks[snap.id].status == "SUCCEEDED" and vcenter_of(state) == DEFAULT_RELEASES[1].vcenter
    assert state.task_view(state.tasks[vc.id], t0 + 1350)["progress_percent"] == 50
    state.advance(t0 + 2700)
    assert state.tasks[vc.id].status == "SUCCEEDED" and vcenter_of(state) == DEFAULT_RELEASES[2].vcenter
    snapshot = state.snapshots[state.tasks[snap.id].result["snapshot_id"]]  # type: ignore[index]
    assert snapshot.vcenter == DEFAULT_RELEASES[1].vcenter  # taken before the upgrade ended


def vcenter_of(state: FleetState) -> str:
    return state.sddcs["sddc-0001"].vcenter


def test_simulator_imports_no_airflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rce_lib.sim.server, rce_lib.sim.cli; "
        "sys.exit(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
