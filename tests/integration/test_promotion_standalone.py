"""A good release flows from wave to wave by itself; the kill switch stops a wave mid-flight.

Under a real `airflow standalone` (scheduler, triggerer, dag-processor, api-server) and the
simulator as a real process:

1. wave `first` runs its canary slice, the gate passes, the rest runs, the run succeeds and
   emits its promoted asset;
2. wave `second` (schedule `after:first`) starts on that asset, with nobody triggering it;
3. while its vCenter upgrades run downstream, the kill switch Variable is set through the REST
   API: the running upgrades are followed to their end, no new downstream task starts, the
   run fails with KILL_SWITCH;
4. the Variable is deleted and the failed tasks cleared: the run resumes and succeeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rce_lib.api.services import POOL_FOR_SERVICE
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.bench_phases import PHASES, phase_breakdown
from rce_lib.devenv.bench_ui import UiProbe
from rce_lib.ledger import Ledger
from rce_lib.pacing.store import Pacer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

TARGET = "1.26.0"
ROLLOUT = "promo-it"
FIRST = ["sddc-0001", "sddc-0003"]
SECOND = ["sddc-0004", "sddc-0005"]
TIME_SCALE = 600.0
VCENTER_REAL_S = 20.0
SWITCH = "rce_kill_switch_second"
AIRFLOW_ENV = {"AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"}


def write_plan(path: Path) -> Path:
    gate = {
        "max_error_rate": 0.05,
        "max_p95_latency_ms": 800,
        "min_samples": 2,
        "sample_interval_seconds": 1,
        "min_effect": 1.0,
        "baseline_size": 4,
    }
    plan = {
        "rollout": ROLLOUT,
        "release": TARGET,
        "defaults": {"max_parallel": 2, "max_fail_percentage": 0, "bake_seconds": 2, "gate": gate},
        "waves": [
            {"name": "first", "selector": {"sddc_ids": FIRST}, "size": 2, "canary_size": 1},
            {"name": "second", "selector": {"sddc_ids": SECOND}, "size": 2, "schedule": "after:first"},
        ],
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def runs_of(rest: AirflowRest, dag_id: str) -> list[dict[str, Any]]:
    return list(rest.request("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"])


def tasks_of(sim: Any, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sddc_id in ids:
        out.extend(sim.request("GET", f"/api/v1/sddcs/{sddc_id}/tasks?limit=200").json()["items"])
    return out


def test_good_release_promotes_and_kill_switch_halts_then_resumes(
    sim_factory: Any, standalone_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(
        size=8,
        time_scale=TIME_SCALE,
        config={"durations_s": {"UPGRADE_VCENTER": VCENTER_REAL_S * TIME_SCALE}},
    )
    airflow = standalone_factory(
        sim, extra_env={"RCE_ROLLOUT_PLAN": str(write_plan(tmp_path / "plan.yaml")), **AIRFLOW_ENV}
    )
    rest = airflow.start()
    for dag_id in ("rce_wave_first", "rce_wave_second"):
        rest.wait_for_dag(dag_id, timeout=180)
        rest.unpause(dag_id)

    # -- 1. the first wave, triggered by hand, passes its gate and is promoted
    first_run = rest.trigger("rce_wave_first", {})
    assert rest.wait_run("rce_wave_first", first_run, timeout=600) == "success"
    ledger = Ledger(f"sqlite:///{airflow.home / 'rce_ledger.db'}")
    decisions = ledger.events(rollout=ROLLOUT, wave="first", kinds=["gate_decision"])
    assert decisions and decisions[-1].data["decision"] == "pass", [e.message for e in decisions]

    # every phase of an SDDC ran in the triggerer, the precheck (which admits the SDDC) too:
    # each succeeded without ever being queued for a worker
    tis = rest.task_instances("rce_wave_first", first_run)
    for task in PHASES:
        started_there = [ti for ti in tis if ti["task_id"].endswith(f".{task}")]
        assert len(started_there) == len(FIRST), started_there
        assert all(ti["state"] == "success" and ti["queued_when"] is None for ti in started_there), (
            started_there
        )

    # what `rce bench` reads of a run, on this real one: the per-phase breakdown and the grid view
    breakdown = phase_breakdown(tis, t_trigger=0.0)
    assert list(breakdown) == list(PHASES), breakdown
    starts = [breakdown[p]["first_start_s"] for p in PHASES]
    assert starts == sorted(starts)
    assert all(breakdown[p]["start_to_end"]["n"] == len(FIRST) for p in PHASES)
    probe = UiProbe("rce_wave_first", first_run)
    assert probe.sample(rest) is not None, probe.errors

    # ... under the pools' sizes, which the scheduler copied into the ledger when the run started;
    # a pool changed through the REST API (as the UI does) is copied at once
    pools = {p["name"]: p["slots"] for p in rest.request("GET", "/pools")["pools"]}
    pacer = Pacer(ledger)
    for service, pool in POOL_FOR_SERVICE.items():
        assert pacer.ceiling(service.value) == pools[pool], (service, pools)
    rest.request("PATCH", "/pools/rce_nsx", json={"name": "rce_nsx", "slots": 3, "include_deferred": False})
    assert pacer.ceiling("nsx") == 3

    # -- 2. the second wave starts on the asset, nobody triggers it
    second = wait_until(
        "rce_wave_second to start on its asset", lambda: runs_of(rest, "rce_wave_second"), 120
    )
    assert len(second) == 1 and second[0]["run_type"] == "asset_triggered", second
    run_id = second[0]["dag_run_id"]

    # -- 3. mid-wave, the kill switch
    def vcenter_running() -> bool:
        return any(
            t["type"] == "UPGRADE_VCENTER" and t["sddc_id"] in SECOND for t in sim.state()["active_tasks"]
        )

    wait_until("a vCenter upgrade of the second wave", vcenter_running, timeout=300, poll=0.5)
    rest.request("POST", "/variables", json={"key": SWITCH, "value": "INC-99 hold the fleet"})
    switched_at = time.time()
    assert rest.wait_run("rce_wave_second", run_id, timeout=600) == "failed"
    tasks = tasks_of(sim, SECOND)
    vcenter = [t for t in tasks if t["type"] == "UPGRADE_VCENTER"]
    assert vcenter and all(t["status"] == "SUCCEEDED" for t in vcenter), vcenter  # followed to the end
    assert [
        t["type"] for t in tasks if t["type"] in ("UPGRADE_NSX", "HOST_MAINTENANCE", "UPGRADE_HOST")
    ] == []
    rows = ledger.list_progress(rollout=ROLLOUT, wave="second")
    codes = {r.sddc_id: r.last_error.code if r.last_error else None for r in rows}
    assert "KILL_SWITCH" in codes.values(), codes
    summary = ledger.events(rollout=ROLLOUT, wave="second", run_id=run_id, kinds=["wave_summary"])[-1]
    assert summary.data["reason"] == "KILL_SWITCH", summary.message
    print(f"kill switch: run failed {time.time() - switched_at:.0f} s after it was set", flush=True)

    # -- 4. off again, clear the failed tasks: the run resumes and ends
    rest.request("DELETE", f"/variables/{SWITCH}")
    failed = [
        [ti["task_id"], ti["map_index"]]
        for ti in rest.task_instances("rce_wave_second", run_id)
        if ti["state"] == "failed"
    ]
    rest.clear("rce_wave_second", run_id, failed, only_failed=True)
    assert rest.wait_run("rce_wave_second", run_id, timeout=600) == "success"
    release = next(r for r in sim.state()["releases"] if r["version"] == TARGET)["components"]
    for sddc_id in FIRST + SECOND:
        sddc = sim.sddc(sddc_id)
        assert sddc["version"] == TARGET and sddc["components"]["vcenter"] == release["vcenter"], sddc
    counters = sim.counters()
    assert counters["duplicate_starts"]["count"] == 0, counters["duplicate_starts"]
    assert counters["tasks_created"]["UPGRADE_VCENTER"] == len(FIRST + SECOND)  # none started twice
