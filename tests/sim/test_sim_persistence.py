"""State survives kill -9: fleet, tasks (still progressing on the wall clock), keys, counters."""

from __future__ import annotations

import signal
import time

from _sim_flow import key, start

from tests.conftest import SimFactory

V26 = {"target_version": "1.26.0"}


def test_kill_9_and_restart_keeps_everything(sim_factory: SimFactory) -> None:
    sim = sim_factory(size=8, time_scale=3000)  # UPGRADE_VCENTER: 2700 s / 3000 = 0.9 s
    before = sim.state()
    k = key()
    resp = sim.request("POST", "/api/v1/sddcs/sddc-0003/components/vcenter/upgrade", json=V26, key=k)
    assert resp.status_code == 202
    task_id = resp.json()["id"]
    host = before["sddcs"][0]["hosts"][0]["id"]
    sim.drift(kind="host_disconnected", sddc_id="sddc-0001", host_id=host)
    sim.faults(unhealthy_sddc_ids=["sddc-0002"])
    time.sleep(0.5)  # counters are written every 0.2 s; fleet/task/key changes at once
    sim.restart()  # SIGKILL, then the same command on the same state dir
    after = sim.state()
    assert [s["id"] for s in after["sddcs"]] == [s["id"] for s in before["sddcs"]]
    assert [s["name"] for s in after["sddcs"]] == [s["name"] for s in before["sddcs"]]
    assert after["sddcs"][0]["hosts"][0]["state"] == "DISCONNECTED"
    assert sim.request("GET", "/api/v1/sddcs/sddc-0002/health").json()["status"] == "UNHEALTHY"
    done = sim.wait_task(task_id)
    assert done["status"] == "SUCCEEDED"
    rel = sim.request("GET", "/api/v1/releases/1.26.0").json()
    assert sim.sddc("sddc-0003")["components"]["vcenter"] == rel["components"]["vcenter"]
    replay = sim.request("POST", "/api/v1/sddcs/sddc-0003/components/vcenter/upgrade", json=V26, key=k)
    assert replay.status_code == 200 and replay.json()["id"] == task_id
    counters = sim.counters()
    assert counters["tasks_created"] == {"UPGRADE_VCENTER": 1}
    assert counters["mutating_calls"] == 2


def test_task_keeps_running_across_restart(sim_factory: SimFactory) -> None:
    sim = sim_factory(size=4, time_scale=300)  # UPGRADE_NSX: 1800 s / 300 = 6 s
    sim.drift(kind="component_changed", sddc_id="sddc-0001", component="vcenter", version="1.26.0")
    task = start(sim, "POST", "/api/v1/sddcs/sddc-0001/components/nsx/upgrade", V26)
    before = sim.request("GET", f"/api/v1/tasks/{task['id']}").json()["progress_percent"]
    time.sleep(1.2)  # 20% of the task's wall time passes before the kill, whatever the restart takes
    sim.restart()
    seen = sim.request("GET", f"/api/v1/tasks/{task['id']}").json()
    assert seen["status"] == "RUNNING" and before + 20 <= seen["progress_percent"] < 100, (before, seen)
    assert sim.sddc("sddc-0001")["status"] == "UPGRADING"
    result = sim.wait_task(task["id"])
    assert result["status"] == "SUCCEEDED"
    sddc = sim.sddc("sddc-0001")
    assert sddc["active_task_ids"] == [] and sddc["status"] == "READY"
    assert (
        sddc["components"]["nsx"] == sim.request("GET", "/api/v1/releases/1.26.0").json()["components"]["nsx"]
    )


def test_existing_state_wins_over_seed_and_sigterm_is_clean(sim_factory: SimFactory) -> None:
    first = sim_factory(size=5, seed=1)
    ids = [s["id"] for s in first.state()["sddcs"]]
    names = [s["name"] for s in first.state()["sddcs"]]
    for _ in range(3):
        first.request("GET", "/api/v1/sddcs")
    assert first.kill(signal.SIGTERM) == 0  # exits cleanly, flushing counters written < 0.2 s ago
    second = sim_factory(size=9, seed=2, state_dir=first.state_dir)
    state = second.state()
    assert [s["id"] for s in state["sddcs"]] == ids and [s["name"] for s in state["sddcs"]] == names
    listed = [r for r in second.counters()["requests"] if r["route"] == "/api/v1/sddcs"]
    assert listed == [{"method": "GET", "route": "/api/v1/sddcs", "status": "200", "count": 3}]
