"""The docker-compose topology, natively: PostgreSQL (Airflow metadata + ledger), Redis,
CeleryExecutor with two workers, and scheduler, dag-processor, triggerer and api-server
as separate processes, running one wave of 20 SDDCs against the simulator.

Mid-wave, one worker is killed with SIGKILL (with the task processes it runs). The
wave must still end `success` (the cut-off tasks retried on the other worker), with
no downstream work started twice (the simulator's duplicate-start counter), one
ledger operation record per step at generation 0, one `task_started` per step, and
every SDDC's progress SUCCEEDED: the two workers wrote the same PostgreSQL ledger
without lost or doubled writes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, select

from rce_lib.api.services import POOL_FOR_SERVICE
from rce_lib.devenv.airflow_distributed import DistributedAirflow
from rce_lib.devenv.airflow_local import REPO_ROOT
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.processes import descendants
from rce_lib.ledger import Ledger, schema
from rce_lib.ledger.models import EventKind, Phase, Status
from rce_lib.pacing.store import Pacer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARGET = "1.26.0"
WAVE = "dist"
DAG_ID = f"rce_wave_{WAVE}"
ROLLOUT = "dist-it"
SIZE = 20
TIME_SCALE = 2400.0
# vCenter upgrades last this long in real seconds: within the phase's inline wait (10 s), so the
# phase task sits on a worker meanwhile, long enough to be killed there mid-phase.
VCENTER_REAL_S = 6.0
STEP_PHASES = (Phase.PRECHECK, Phase.SNAPSHOT, Phase.UPGRADE_VCENTER, Phase.UPGRADE_NSX)

AIRFLOW_ENV = {
    # Find the tasks of the dead worker quickly: no heartbeat for 20 s -> up_for_retry.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # (No shorter [scheduler] task_queued_timeout: with 2 cores tasks wait in the queue for
    # minutes, and requeueing them only adds work. The dead worker held no unstarted task:
    # Celery's prefetch is 1 with late acks.)
    # The DAG file is there from the start: no need to look for new ones often.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
    # By default every phase starts and runs in the triggerer, and a worker runs none of it: the
    # worker's death this test is about needs the phases on workers (the path a phase takes when
    # the triggerer hands it over). tests/integration/test_resume_standalone.py kills the
    # triggerer mid-phase with the default.
    "RCE_PHASES_IN_TRIGGERER": "off",
}


def write_plan(path: Path) -> Path:
    plan = {
        "rollout": ROLLOUT,
        "release": TARGET,
        "defaults": {
            "max_parallel": SIZE,
            "max_fail_percentage": 100,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
        },
        "waves": [{"name": WAVE, "selector": {"versions": ["1.25.0"]}, "size": SIZE, "canary_size": 0}],
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def killed_sddcs(killed: dict[tuple[str, int], dict[str, Any]]) -> set[tuple[str, int]]:
    return {(str(ti["rendered_map_index"]), ti["map_index"]) for ti in killed.values()}


def label(ti: dict[str, Any]) -> str:
    return f"{ti['task_id']}[{ti.get('rendered_map_index') or ti['map_index']}]={ti['state']}"


@pytest.fixture
def distributed(sim_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, DistributedAirflow]]:
    sim = sim_factory(
        size=40,
        time_scale=TIME_SCALE,
        config={"durations_s": {"UPGRADE_VCENTER": VCENTER_REAL_S * TIME_SCALE}},
    )
    airflow = DistributedAirflow(
        home=tmp_path / "airflow",
        sim_url=sim.url,
        sim_token=sim.token,
        workers=2,
        worker_concurrency=4,
        extra_env={"RCE_ROLLOUT_PLAN": str(write_plan(tmp_path / "plan.yaml")), **AIRFLOW_ENV},
    )
    try:
        airflow.prepare()
        airflow.start()
        yield sim, airflow
    finally:
        print(airflow.log_tails(30))
        airflow.stop()
        airflow.drop()


def test_wave_survives_a_killed_celery_worker_without_duplicate_work(
    distributed: tuple[Any, DistributedAirflow],
) -> None:
    began = time.monotonic()
    sim, airflow = distributed
    rest = AirflowRest(airflow.api_url, "admin", airflow.local.password())
    rest.wait_ready(timeout=240)
    rest.login()
    rest.wait_for_dag(DAG_ID, timeout=240)
    rest.unpause(DAG_ID)
    run_id = rest.trigger(DAG_ID, {"target_version": TARGET})
    print(f"components up and run triggered after {time.monotonic() - began:.0f} s", flush=True)

    # -- kill worker-1 while it runs upgrade_vcenter phases that have a downstream task in flight
    victim = airflow.groups["worker-1"]
    cut: dict[str, Any] = {}

    def victim_mid_phase() -> bool:
        vcenter = rest.request(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/bulk.upgrade_vcenter/listMapped",
            params={"limit": 100, "state": "running"},
        )["task_instances"]
        if not vcenter:
            return False
        mine = set(descendants(victim.pid))
        active = {t["sddc_id"] for t in sim.state()["active_tasks"] if t["type"] == "UPGRADE_VCENTER"}
        cut["tis"] = [
            ti for ti in vcenter if ti.get("pid") in mine and ti.get("rendered_map_index") in active
        ]
        return bool(cut["tis"])

    wait_until("worker-1 running an upgrade_vcenter phase", victim_mid_phase, timeout=420, poll=1.0)
    airflow.kill_worker("worker-1")
    # Between the look and the kill a phase may have ended by itself (its downstream task done):
    # only those still unfinished at the kill were cut off.
    now = {
        (ti["task_id"], ti["map_index"]): ti
        for ti in rest.request(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/bulk.upgrade_vcenter/listMapped",
            params={"limit": 100},
        )["task_instances"]
    }
    killed = {
        (ti["task_id"], ti["map_index"]): ti
        for ti in cut["tis"]
        if not (
            now[(ti["task_id"], ti["map_index"])]["state"] == "success"
            and now[(ti["task_id"], ti["map_index"])]["try_number"] == ti["try_number"]
        )
    }
    assert killed, "every phase seen on worker-1 ended before the kill: nothing was cut off"
    print(
        f"killed worker-1 at {time.monotonic() - began:.0f} s mid",
        ", ".join(label(ti) for ti in killed.values()),
        flush=True,
    )
    assert not victim.alive()

    # -- the wave completes on worker-2 (retries; clear what exhausted them, as an operator would)
    # ~3 min on a quiet 2-core machine; far longer while other jobs load it
    deadline = time.monotonic() + 900
    clears = 0
    state = rest.run_state(DAG_ID, run_id)
    while time.monotonic() < deadline:
        state = rest.run_state(DAG_ID, run_id)
        if state in ("success", "failed"):
            break
        page = rest.request(
            "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"state": "failed"}
        )
        failed = [ti for ti in page["task_instances"] if ti["map_index"] >= 0]
        if failed:
            clears += 1
            assert clears <= 3, f"still failing after {clears - 1} clears: {[label(ti) for ti in failed]}"
            rest.clear(DAG_ID, run_id, [[ti["task_id"], ti["map_index"]] for ti in failed])
        time.sleep(5)
    tis = rest.task_instances(DAG_ID, run_id)
    assert state == "success", f"run ended {state}: {[label(ti) for ti in tis if ti['state'] != 'success']}"
    print(f"wave succeeded at {time.monotonic() - began:.0f} s after {clears} clears", flush=True)
    assert airflow.dead() == ["worker-1"], airflow.dead()

    # the cut-off phases ran again (a later try, or cleared), on the surviving worker
    by_key = {(ti["task_id"], ti["map_index"]): ti for ti in tis}
    for key, before in killed.items():
        after = by_key[key]
        assert after["state"] == "success"
        assert after["try_number"] > before["try_number"] or clears, (before, after)
    sddcs = sorted(set(rest.sddc_ids(DAG_ID, run_id).values()))
    assert sddcs == sorted(str(ti["rendered_map_index"]) for ti in tis if ti["task_id"] == "bulk.precheck")
    assert len(sddcs) == SIZE

    # -- the fleet: every SDDC at the target; nothing started twice
    release = next(r for r in sim.state()["releases"] if r["version"] == TARGET)["components"]
    fleet = {s["id"]: s for s in sim.state()["sddcs"]}
    for sddc_id in sddcs:
        assert fleet[sddc_id]["components"] == {"vcenter": release["vcenter"], "nsx": release["nsx"]}
        assert {h["version"] for h in fleet[sddc_id]["hosts"]} == {release["esx"]}
    counters = sim.counters()
    assert counters["duplicate_starts"]["count"] == 0, counters["duplicate_starts"]
    assert counters["tasks_created"]["UPGRADE_VCENTER"] == SIZE, counters["tasks_created"]
    assert counters["tasks_created"]["UPGRADE_NSX"] == SIZE, counters["tasks_created"]
    hosts = sum(len(fleet[s]["hosts"]) for s in sddcs)
    assert counters["tasks_created"]["UPGRADE_HOST"] == hosts, counters["tasks_created"]

    # -- the ledger (PostgreSQL, written by both workers): one record per step, consistent generations
    ledger = Ledger(airflow.ledger_url)
    # the scheduler copied the pools' sizes into this PostgreSQL ledger when the run started
    pools = json.loads((REPO_ROOT / "include" / "pools.json").read_text())
    for service, pool in POOL_FOR_SERVICE.items():
        assert Pacer(ledger).ceiling(service.value) == pools[pool]["slots"], service
    progress = {p.sddc_id: p for p in ledger.list_progress(rollout=ROLLOUT, wave=WAVE, run_id=run_id)}
    assert sorted(progress) == sddcs
    assert {p.status for p in progress.values()} == {Status.SUCCEEDED}
    engine = create_engine(airflow.ledger_url)
    try:
        with engine.connect() as conn:
            ops = conn.execute(select(schema.operations).where(schema.operations.c.rollout == ROLLOUT)).all()
    finally:
        engine.dispose()
    steps = Counter((op.sddc_id, op.phase, op.host_id) for op in ops)
    assert max(steps.values()) == 1
    expected_steps = {(s, p.value, "") for s in sddcs for p in STEP_PHASES} | {
        (s, Phase.UPGRADE_HOSTS.value, f"{h['id']}/{action}")
        for s in sddcs
        for h in fleet[s]["hosts"]
        for action in ("enter", "upgrade", "exit")
    }
    assert expected_steps <= set(steps), sorted(expected_steps - set(steps))[:5]
    assert {op.generation for op in ops} == {0}, "no downstream task failed: no generation was bumped"
    # A phase cut off by the kill finds, when retried, the tasks its killed execution started:
    # recorded even if the kill came before the ledger heard of them, settled if they ended unseen
    # (the retry's goal may already hold: it then starts nothing that would record them).
    retried = {
        (str(ti["rendered_map_index"]), ti["task_id"].removeprefix("bulk."))
        for ti in tis
        if ti["try_number"] > 1 and ti["map_index"] >= 0
    }
    assert {(k[0], "upgrade_vcenter") for k in killed_sddcs(killed)} <= retried
    for op in ops:
        assert op.task_id and op.status == "SUCCEEDED", op
        if (op.sddc_id, op.phase) in retried:
            assert sim.request("GET", f"/api/v1/tasks/{op.task_id}").json()["status"] == "SUCCEEDED", op
    started = Counter(
        (e.sddc_id, e.phase, e.data.get("host_id"))
        for e in ledger.events(rollout=ROLLOUT, wave=WAVE, run_id=run_id, limit=100_000)
        if e.kind == EventKind.TASK_STARTED
    )
    assert started and max(started.values()) == 1, [k for k, n in started.items() if n > 1]
    assert len(ledger.events(kinds=[EventKind.GENERATION_BUMPED], limit=1000)) == 0
    print(f"distributed test took {time.monotonic() - began:.0f} s", flush=True)
