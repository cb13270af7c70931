"""Semantics the contract names: conflicts, ordering, paths, idempotency, upgrade and rollback."""

from __future__ import annotations

from _sim_contract import Contract
from _sim_flow import full_upgrade, key, run, snapshot, start, upgrade_components, upgrade_hosts

from tests.conftest import SimServer

V26 = {"target_version": "1.26.0"}


def _release(sim: SimServer, version: str) -> dict[str, str]:
    return sim.request("GET", f"/api/v1/releases/{version}").json()["components"]  # type: ignore[no-any-return]


def test_idempotent_replay_and_reuse(sim_server: SimServer, contract: Contract) -> None:
    path = "/api/v1/sddcs/sddc-0002/prechecks"
    k = key()
    first = sim_server.request("POST", path, json=V26, key=k)
    assert first.status_code == 202
    again = sim_server.request("POST", path, json=V26, key=k)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    contract.check(again, "/api/v1/sddcs/{sddc_id}/prechecks", "post")
    sim_server.wait_task(first.json()["id"])
    later = sim_server.request("POST", path, json=V26, key=k)  # replay returns the task's current state
    assert later.status_code == 200 and later.json()["status"] == "SUCCEEDED"
    other_body = sim_server.request("POST", path, json={"target_version": "1.25.0"}, key=k)
    assert other_body.status_code == 422 and other_body.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    other_path = sim_server.request("POST", "/api/v1/sddcs/sddc-0003/prechecks", json=V26, key=k)
    assert other_path.status_code == 422 and other_path.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    bad = sim_server.request("POST", path, json=V26, key="bad key!")
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_IDEMPOTENCY_KEY"
    too_long = sim_server.request("POST", path, json=V26, key="k" * 129)
    assert too_long.status_code == 400
    assert sim_server.counters()["tasks_created"] == {"PRECHECK": 1}


def test_refused_call_does_not_bind_key(sim_server: SimServer) -> None:
    base = "/api/v1/sddcs/sddc-0003"
    refused_key = key()
    resp = sim_server.request("POST", f"{base}/components/nsx/upgrade", json=V26, key=refused_key)
    assert resp.status_code == 409 and resp.json()["code"] == "COMPONENT_ORDER"
    run(sim_server, "POST", f"{base}/components/vcenter/upgrade", V26)
    resp = sim_server.request("POST", f"{base}/components/nsx/upgrade", json=V26, key=refused_key)
    assert resp.status_code == 202, resp.text  # the key was not bound by the 409
    sim_server.wait_task(resp.json()["id"])


def test_operation_in_progress_and_already_at_version(sim_server: SimServer) -> None:
    base = "/api/v1/sddcs/sddc-0013"
    task = start(sim_server, "POST", f"{base}/components/vcenter/upgrade", V26)
    resp = sim_server.request("POST", f"{base}/components/vcenter/upgrade", json=V26, key=key())
    body = resp.json()
    assert resp.status_code == 409 and body["code"] == "OPERATION_IN_PROGRESS"
    assert body["existing_task_id"] == task["id"]
    assert sim_server.sddc("sddc-0013")["status"] == "UPGRADING"
    assert task["id"] in sim_server.sddc("sddc-0013")["active_task_ids"]
    sim_server.wait_task(task["id"])
    resp = sim_server.request("POST", f"{base}/components/vcenter/upgrade", json=V26, key=key())
    assert resp.status_code == 409 and resp.json()["code"] == "ALREADY_AT_VERSION"
    dups = sim_server.counters()["duplicate_starts"]
    assert dups["count"] == 2
    assert [d["reason"] for d in dups["details"]] == ["running", "already_at_version"]
    assert dups["details"][0]["existing_task_id"] == task["id"]


def test_host_rules(sim_server: SimServer) -> None:
    sid = "sddc-0004"
    base = f"/api/v1/sddcs/{sid}"
    hosts = sim_server.sddc(sid)["hosts"]
    h1, h2 = hosts[0]["id"], hosts[1]["id"]
    assert hosts[0]["cluster_id"] == hosts[1]["cluster_id"]
    upgrade_components(sim_server, sid, "1.26.0")
    resp = sim_server.request("POST", f"{base}/hosts/{h1}/upgrade", json=V26, key=key())
    assert resp.status_code == 409 and resp.json()["code"] == "HOST_NOT_IN_MAINTENANCE"
    entering = start(sim_server, "PUT", f"{base}/hosts/{h1}/maintenance", {"enabled": True})
    resp = sim_server.request("PUT", f"{base}/hosts/{h2}/maintenance", json={"enabled": True}, key=key())
    assert resp.status_code == 409 and resp.json()["code"] == "CLUSTER_CAPACITY"  # h1 is entering
    sim_server.wait_task(entering["id"])
    resp = sim_server.request("PUT", f"{base}/hosts/{h2}/maintenance", json={"enabled": True}, key=key())
    assert resp.status_code == 409 and resp.json()["code"] == "CLUSTER_CAPACITY"  # h1 is in maintenance
    upgrading = start(sim_server, "POST", f"{base}/hosts/{h1}/upgrade", V26)
    resp = sim_server.request("POST", f"{base}/hosts/{h1}/upgrade", json=V26, key=key())
    assert resp.status_code == 409 and resp.json()["existing_task_id"] == upgrading["id"]
    assert sim_server.wait_task(upgrading["id"])["status"] == "SUCCEEDED"
    resp = sim_server.request("POST", f"{base}/hosts/{h1}/upgrade", json=V26, key=key())
    assert resp.status_code == 409 and resp.json()["code"] == "ALREADY_AT_VERSION"
    again = run(sim_server, "PUT", f"{base}/hosts/{h1}/maintenance", {"enabled": True})  # no-op, but counted
    assert again["type"] == "HOST_MAINTENANCE"
    reasons = [d["reason"] for d in sim_server.counters()["duplicate_starts"]["details"]]
    assert reasons == ["running", "already_at_version", "already_in_maintenance"]
    run(sim_server, "PUT", f"{base}/hosts/{h1}/maintenance", {"enabled": False})
    assert sim_server.sddc(sid)["hosts"][0]["state"] == "CONNECTED"
    run(sim_server, "PUT", f"{base}/hosts/{h2}/maintenance", {"enabled": True})


def test_upgrade_path_not_supported(sim_server: SimServer) -> None:
    sid = "sddc-0009"
    assert sim_server.sddc(sid)["version"] == "1.24.0"
    base = f"/api/v1/sddcs/{sid}"
    resp = sim_server.request("POST", f"{base}/components/vcenter/upgrade", json=V26, key=key())
    assert resp.status_code == 422 and resp.json()["code"] == "UPGRADE_PATH_NOT_SUPPORTED"
    task = run(sim_server, "POST", f"{base}/prechecks", V26, status="FAILED")
    assert task["error"]["code"] == "PRECHECK_BLOCKED" and task["error"]["retryable"] is False
    assert [f["code"] for f in task["result"]["findings"]] == ["UPGRADE_PATH_NOT_SUPPORTED"]
    ok = run(sim_server, "POST", f"{base}/prechecks", {"target_version": "1.25.0"})
    assert ok["result"] == {"findings": []}


def test_full_upgrade_reaches_target(sim_server: SimServer) -> None:
    sid = "sddc-0005"
    target = _release(sim_server, "1.26.0")
    full_upgrade_mid = sim_server.sddc(sid)
    assert full_upgrade_mid["version"] == "1.25.0"
    run(sim_server, "POST", f"/api/v1/sddcs/{sid}/prechecks", V26)
    snapshot(sim_server, sid)
    upgrade_components(sim_server, sid, "1.26.0")
    mid = sim_server.sddc(sid)
    assert mid["components"] == {"vcenter": target["vcenter"], "nsx": target["nsx"]}
    assert mid["version"] == "1.25.0"  # mixed components: still the earlier release
    upgrade_hosts(sim_server, sid, "1.26.0")
    done = sim_server.sddc(sid)
    assert done["version"] == "1.26.0" and done["status"] == "READY"
    assert {h["version"] for h in done["hosts"]} == {target["esx"]}
    assert {h["state"] for h in done["hosts"]} == {"CONNECTED"}
    items = sim_server.request("GET", "/api/v1/sddcs?version=1.26.0").json()["items"]
    assert sid in {s["id"] for s in items}
    assert sim_server.counters()["duplicate_starts"]["count"] == 0


def test_rollback_restores_snapshot(sim_server: SimServer) -> None:
    sid = "sddc-0006"
    before = sim_server.sddc(sid)
    snap = full_upgrade(sim_server, sid, "1.26.0")
    assert sim_server.sddc(sid)["version"] == "1.26.0"
    base = f"/api/v1/sddcs/{sid}"
    host = before["hosts"][0]["id"]
    run(sim_server, "PUT", f"{base}/hosts/{host}/maintenance", {"enabled": True})
    task = start(sim_server, "POST", f"{base}/rollback", {"snapshot_id": snap})
    assert sim_server.sddc(sid)["status"] == "ROLLING_BACK"
    resp = sim_server.request("POST", f"{base}/rollback", json={"snapshot_id": snap}, key=key())
    assert resp.status_code == 409 and resp.json()["existing_task_id"] == task["id"]
    resp = sim_server.request("POST", f"{base}/snapshots", json={}, key=key())
    assert resp.status_code == 409 and resp.json()["code"] == "ROLLBACK_IN_PROGRESS"
    assert sim_server.wait_task(task["id"])["status"] == "SUCCEEDED"
    after = sim_server.sddc(sid)
    assert after["version"] == "1.25.0" and after["status"] == "READY"
    assert after["components"] == before["components"]
    assert [(h["id"], h["version"], h["state"]) for h in after["hosts"]] == [
        (h["id"], h["version"], "CONNECTED") for h in before["hosts"]
    ]
    other = sim_server.request(
        "POST", "/api/v1/sddcs/sddc-0007/rollback", json={"snapshot_id": snap}, key=key()
    )
    assert other.status_code == 404 and other.json()["code"] == "SNAPSHOT_NOT_FOUND"


def test_rollback_cancels_running_work(sim_server: SimServer) -> None:
    sid = "sddc-0017"
    base = f"/api/v1/sddcs/{sid}"
    snap = snapshot(sim_server, sid)
    upgrade = start(sim_server, "POST", f"{base}/components/vcenter/upgrade", V26)
    rollback = start(sim_server, "POST", f"{base}/rollback", {"snapshot_id": snap})
    canceled = sim_server.wait_task(upgrade["id"])
    assert canceled["status"] == "CANCELED"
    assert sim_server.wait_task(rollback["id"])["status"] == "SUCCEEDED"
    assert sim_server.sddc(sid)["components"]["vcenter"] == _release(sim_server, "1.25.0")["vcenter"]


def test_health_and_unhealthy_release(sim_server: SimServer) -> None:
    healthy = sim_server.request("GET", "/api/v1/sddcs/sddc-0010/health").json()
    assert healthy["status"] == "HEALTHY" and healthy["window_s"] == 300
    sim_server.faults(unhealthy_sddc_ids=["sddc-0010"])
    sick = sim_server.request("GET", "/api/v1/sddcs/sddc-0010/health").json()
    assert sick["status"] == "UNHEALTHY" and sick["error_rate"] >= 0.2 and sick["p95_latency_ms"] >= 1500
    assert sim_server.sddc("sddc-0010")["status"] == "DEGRADED"
    sim_server.faults(unhealthy_sddc_ids=[], unhealthy_release="1.24.0")
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0019/health").json()["status"] == "UNHEALTHY"
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0010/health").json()["status"] == "HEALTHY"
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0010/health?window_s=5").status_code == 400


def test_drift_kinds(sim_server: SimServer) -> None:
    sid = "sddc-0007"
    host = sim_server.sddc(sid)["hosts"][0]["id"]
    sim_server.drift(kind="host_disconnected", sddc_id=sid, host_id=host)
    assert sim_server.sddc(sid)["status"] == "DEGRADED"
    assert sim_server.request("GET", f"/api/v1/sddcs/{sid}/health").json()["status"] == "DEGRADED"
    task = run(sim_server, "POST", f"/api/v1/sddcs/{sid}/prechecks", V26, status="FAILED")
    assert {f["code"] for f in task["result"]["findings"]} == {"HOST_DISCONNECTED", "SDDC_NOT_READY"}
    sim_server.drift(kind="host_reconnected", sddc_id=sid, host_id=host)
    assert sim_server.sddc(sid)["status"] == "READY"
    sim_server.drift(kind="host_maintenance", sddc_id=sid, host_id=host)
    assert sim_server.sddc(sid)["hosts"][0]["state"] == "MAINTENANCE"
    rel = _release(sim_server, "1.26.0")
    sim_server.drift(kind="component_changed", sddc_id=sid, component="vcenter", version="1.26.0")
    after = sim_server.sddc(sid)
    assert after["components"]["vcenter"] == rel["vcenter"] and after["version"] == "1.25.0"
    sim_server.drift(kind="sddc_upgraded", sddc_id="sddc-0008", version="1.26.0")
    up = sim_server.sddc("sddc-0008")
    assert up["version"] == "1.26.0" and {h["version"] for h in up["hosts"]} == {rel["esx"]}
    sim_server.drift(kind="sddc_removed", sddc_id="sddc-0024")
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0024").status_code == 404
    ids = {s["id"] for s in sim_server.request("GET", "/api/v1/sddcs?limit=500").json()["items"]}
    assert "sddc-0024" not in ids and "sddc-0023" in ids
    bad = sim_server.request("POST", "/sim/drift", json={"kind": "meteor", "sddc_id": sid})
    assert bad.status_code == 422
