"""The resume acceptance test, on a real `airflow standalone` against the simulator.

Kill every Airflow process mid-phase (kill -9 of the whole standalone: scheduler,
triggerer, workers, api-server), restart on the same AIRFLOW_HOME, then do what
an operator does through the REST API: clear the task that was cut off, and
clear whatever else failed, until the run ends. The wave must end `success`
from the SDDCs' real state: no work started twice, no host left in
maintenance, every SDDC at the target, and the ledger shows the cut-off phase
re-attached to (or found done) the downstream work instead of starting it again.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARGET = "1.26.0"
WAVE = "resume"
DAG_ID = f"rce_wave_{WAVE}"
ROLLOUT = "resume-it"
# 3 hosts each, at 1.25.0 (upgradable straight to 1.26.0) in the seed-42 fleet.
COHORT = ["sddc-0004", "sddc-0005", "sddc-0012"]
TIME_SCALE = 600.0
# vCenter upgrades long enough (in real seconds) to outlive the crash and a quick restart, so that
# the cleared phase usually re-attaches to its running downstream task (on a loaded machine the
# restart may take longer: the phase then finds the upgrade done, which must be just as safe).
VCENTER_REAL_S = 90.0
ACTIVE_STATES = {
    "running",
    "deferred",
    "queued",
    "scheduled",
    "up_for_retry",
    "up_for_reschedule",
    "restarting",
}
# What a resumed phase writes about the downstream task it was cut off from, instead of starting it
# again (runtime.OUTCOME_EVENT, base._reattach, base.settle, base.recover_unrecorded): re-attached
# to it while it still runs, observed or replayed or adopted or recovered it, saw it finish (its
# trigger was resumed), or found the phase's goal already true on the SDDC (phase_skipped: only
# when this execution settled no task itself).
RESUME_EVENTS = {
    "task_reattached",
    "task_observed",
    "task_replayed",
    "task_adopted",
    "task_recovered",
    "task_finished",
    "phase_skipped",
}

AIRFLOW_ENV = {
    # Find the tasks of the dead workers quickly: no heartbeat for 30 s -> failed / up_for_retry.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # Reset what the dead scheduler had queued, soon after the restart.
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "20",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
}


def write_plan(path: Path) -> Path:
    plan = {
        "rollout": ROLLOUT,
        "release": TARGET,
        "defaults": {
            "max_parallel": 4,
            "max_fail_percentage": 100,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
        },
        "waves": [{"name": WAVE, "selector": {"sddc_ids": COHORT}, "size": "100%", "canary_size": 0}],
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def sddc_tis(rest: AirflowRest, run_id: str) -> list[dict[str, Any]]:
    return [
        ti
        for ti in rest.task_instances(DAG_ID, run_id)
        if str(ti["task_id"]).startswith(("canary.", "bulk.")) and int(ti.get("map_index", -1)) >= 0
    ]


def label(ti: dict[str, Any]) -> str:
    return f"{ti['task_id']}[{ti.get('rendered_map_index') or ti['map_index']}]={ti['state']}"


def clear(rest: AirflowRest, run_id: str, tis: list[dict[str, Any]], *, only_failed: bool) -> Any:
    """What an operator does in the grid: clear these task instances (and what follows them),
    again if standalone's SQLite was locked just after the restart (HTTP 500 "Database error": the
    clear's transaction rolled back, so nothing was cleared)."""
    for attempt in range(5):
        try:
            return rest.request(
                "POST",
                f"/dags/{DAG_ID}/clearTaskInstances",
                json={
                    "dry_run": False,
                    "dag_run_id": run_id,
                    "task_ids": [[ti["task_id"], ti["map_index"]] for ti in tis],
                    "only_failed": only_failed,
                    "include_downstream": True,
                    "reset_dag_runs": True,
                },
            )
        except RuntimeError as err:
            if "HTTP 500" not in str(err) or "Database error" not in str(err) or attempt == 4:
                raise
            print(f"clear refused ({str(err)[:80]}); again in 3 s", flush=True)
            time.sleep(3)
    raise AssertionError("unreachable")


def test_killed_standalone_resumes_from_real_sddc_state_without_duplicate_work(
    sim_factory: Any, standalone_factory: Any, tmp_path: Path
) -> None:
    began = time.monotonic()
    sim = sim_factory(
        size=12,
        time_scale=TIME_SCALE,
        config={"durations_s": {"UPGRADE_VCENTER": VCENTER_REAL_S * TIME_SCALE}},
    )
    release = next(r for r in sim.state()["releases"] if r["version"] == TARGET)["components"]
    airflow = standalone_factory(
        sim, extra_env={"RCE_ROLLOUT_PLAN": str(write_plan(tmp_path / "plan.yaml")), **AIRFLOW_ENV}
    )
    rest = airflow.start()
    rest.wait_for_dag(DAG_ID, timeout=180)
    rest.unpause(DAG_ID)
    run_id = rest.trigger(DAG_ID, {"target_version": TARGET})

    # -- wait until an SDDC is mid-phase: its vCenter upgrade runs downstream, the task waits on it
    seen: dict[str, Any] = {}

    def mid_phase(count: int) -> bool:
        active = {
            t["sddc_id"]: t["id"] for t in sim.state()["active_tasks"] if t["type"] == "UPGRADE_VCENTER"
        }
        tis = sddc_tis(rest, run_id)
        names = rest.sddc_ids(DAG_ID, run_id)  # the phases start in the triggerer: no rendered map index
        hit = {
            names[("bulk", ti["map_index"])]: active[names[("bulk", ti["map_index"])]]
            for ti in tis
            if ti["task_id"] == "bulk.upgrade_vcenter"
            and ti["state"] in ("running", "deferred")
            and names.get(("bulk", ti["map_index"])) in active
        }
        seen.update(tis=tis, vcenter_tasks=hit)
        return len(hit) >= count

    wait_until("an SDDC mid upgrade_vcenter", lambda: mid_phase(1), timeout=240, poll=0.5)
    with contextlib.suppress(AssertionError):  # the more SDDCs cut off mid-phase the better; not required
        wait_until("every SDDC mid upgrade_vcenter", lambda: mid_phase(len(COHORT)), timeout=20, poll=0.5)
    airflow.kill9()
    killed_at = time.monotonic()
    cut_off = [ti for ti in seen["tis"] if ti["state"] in ACTIVE_STATES]
    vcenter_tasks: dict[str, str] = seen["vcenter_tasks"]  # SDDC -> its downstream vCenter task
    print("killed standalone with", ", ".join(label(ti) for ti in cut_off), vcenter_tasks, flush=True)

    ledger = Ledger(f"sqlite:///{airflow.home / 'rce_ledger.db'}")
    last_event_before = max(
        (e.id for e in ledger.events(rollout=ROLLOUT, wave=WAVE, limit=100_000)), default=0
    )
    still_running = {t["id"] for t in sim.state()["active_tasks"]}
    assert set(vcenter_tasks.values()) <= still_running, "the vCenter upgrades go on while Airflow is down"

    time.sleep(3)
    rest = airflow.start(timeout=300)
    print(f"standalone back {time.monotonic() - killed_at:.0f} s after the crash", flush=True)

    # -- the operator: clear the tasks the crash cut off, then whatever fails, until the run ends
    cut_off_keys = {(ti["task_id"], ti["map_index"]) for ti in cut_off}
    stuck = [
        ti
        for ti in sddc_tis(rest, run_id)
        if (ti["task_id"], ti["map_index"]) in cut_off_keys and ti["state"] != "success"
    ]
    if stuck:
        print("clearing cut-off tasks:", ", ".join(label(ti) for ti in stuck), flush=True)
        clear(rest, run_id, stuck, only_failed=False)
    deadline = time.monotonic() + 300
    clears = 0
    state = rest.run_state(DAG_ID, run_id)
    while time.monotonic() < deadline:
        state = rest.run_state(DAG_ID, run_id)
        if state == "success":
            break
        failed = [ti for ti in sddc_tis(rest, run_id) if ti["state"] == "failed"]
        if failed:
            clears += 1
            assert clears <= 6, f"still failing after {clears - 1} clears: {[label(ti) for ti in failed]}"
            print("clearing failed:", ", ".join(label(ti) for ti in failed), flush=True)
            clear(rest, run_id, failed, only_failed=True)
        elif state == "failed":
            break
        time.sleep(3)
    final = [label(ti) for ti in rest.task_instances(DAG_ID, run_id) if ti["state"] != "success"]
    assert state == "success", f"run ended {state}; not successful: {final}"

    # -- the fleet: every cohort SDDC at the target, nothing started twice, no host left in maintenance
    fleet = {s["id"]: s for s in sim.state()["sddcs"]}
    for sddc_id in COHORT:
        sddc = fleet[sddc_id]
        assert sddc["components"] == {"vcenter": release["vcenter"], "nsx": release["nsx"]}, sddc
        assert {h["version"] for h in sddc["hosts"]} == {release["esx"]}, sddc
    in_maintenance = [h["id"] for s in fleet.values() for h in s["hosts"] if h["state"] == "MAINTENANCE"]
    assert in_maintenance == []
    counters = sim.counters()
    assert counters["duplicate_starts"]["count"] == 0, counters["duplicate_starts"]
    assert counters["retry_after_violations"]["count"] == 0, counters["retry_after_violations"]
    assert counters["tasks_created"]["UPGRADE_VCENTER"] == len(COHORT), counters["tasks_created"]
    assert counters["tasks_created"]["UPGRADE_NSX"] == len(COHORT), counters["tasks_created"]

    # -- the ledger: every member succeeded; the cut-off vCenter phases resumed, never restarted
    progress = {p.sddc_id: p for p in ledger.list_progress(rollout=ROLLOUT, wave=WAVE, run_id=run_id)}
    assert sorted(progress) == COHORT
    assert {p.sddc_id: p.status for p in progress.values()} == dict.fromkeys(COHORT, Status.SUCCEEDED)
    after = ledger.events(
        rollout=ROLLOUT, wave=WAVE, run_id=run_id, after_id=last_event_before, limit=100_000
    )
    for sddc_id in sorted(vcenter_tasks):
        mine = [e for e in after if e.sddc_id == sddc_id and e.phase is Phase.UPGRADE_VCENTER]
        kinds = [e.kind for e in mine]
        assert "task_started" not in kinds, (
            f"{sddc_id}: vCenter upgrade started again after the crash: {kinds}"
        )
        tasks = {e.data.get("task_id") for e in mine if e.kind.startswith("task_")}
        assert tasks <= {vcenter_tasks[sddc_id]}, f"{sddc_id}: other tasks than the cut-off one: {tasks}"
        assert RESUME_EVENTS & set(kinds), f"{sddc_id}: no sign of resuming the cut-off phase: {kinds}"
        assert kinds[-1] in ("phase_succeeded", "phase_skipped"), f"{sddc_id}: {kinds}"
    print(f"resume test took {time.monotonic() - began:.0f} s; {clears} clear rounds", flush=True)
