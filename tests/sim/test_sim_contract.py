"""Every operation of the contract, answered by the real simulator process, validated
against the vendored schemas (success and problem answers)."""

from __future__ import annotations

from typing import Any

from _sim_contract import Contract
from _sim_flow import key, run, snapshot

from tests.conftest import SimServer

SDDC = "/api/v1/sddcs/{sddc_id}"


def test_reads_match_contract(sim_server: SimServer, contract: Contract) -> None:
    page = contract.check(sim_server.request("GET", "/api/v1/sddcs?limit=5"), "/api/v1/sddcs", "get")
    assert len(page["items"]) == 5 and page["next_cursor"]
    sddc = contract.check(sim_server.request("GET", "/api/v1/sddcs/sddc-0001"), SDDC, "get")
    assert sddc["id"] == "sddc-0001" and sddc["status"] == "READY"
    assert all(h["state"] == "CONNECTED" for h in sddc["hosts"])
    health = contract.check(
        sim_server.request("GET", "/api/v1/sddcs/sddc-0001/health?window_s=600"), SDDC + "/health", "get"
    )
    assert health["status"] == "HEALTHY" and health["window_s"] == 600
    assert 0.001 <= health["error_rate"] <= 0.01 and 80 <= health["p95_latency_ms"] <= 250
    tasks = contract.check(sim_server.request("GET", "/api/v1/sddcs/sddc-0001/tasks"), SDDC + "/tasks", "get")
    assert isinstance(tasks["items"], list)
    rel = contract.check(
        sim_server.request("GET", "/api/v1/releases/1.26.0"), "/api/v1/releases/{version}", "get"
    )
    assert rel["upgrade_from"] == ["1.25.0"]
    assert len({rel["components"][c] for c in ("vcenter", "nsx", "esx")}) == 3


def test_releases_have_distinct_builds_and_paths(sim_server: SimServer, contract: Contract) -> None:
    path = "/api/v1/releases/{version}"
    rels = {
        v: contract.check(sim_server.request("GET", f"/api/v1/releases/{v}"), path, "get")
        for v in ("1.24.0", "1.25.0", "1.26.0")
    }
    assert rels["1.25.0"]["upgrade_from"] == ["1.24.0"]
    assert "1.24.0" not in rels["1.26.0"]["upgrade_from"]
    assert len({r["components"]["vcenter"] for r in rels.values()}) == 3
    missing = sim_server.request("GET", "/api/v1/releases/9.9.9")
    assert contract.check(missing, path, "get")["status"] == 404


def test_every_mutation_matches_contract(sim_server: SimServer, contract: Contract) -> None:
    sid = "sddc-0014"
    base = f"/api/v1/sddcs/{sid}"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = sim_server.request(
        "POST",
        f"{base}/prechecks",
        json={"target_version": "1.26.0"},
        key=key(),
        headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    task = contract.check(resp, SDDC + "/prechecks", "post")
    assert resp.status_code == 202 and task["trace_id"] == trace and task["type"] == "PRECHECK"
    done = contract.check(
        sim_server.request("GET", f"/api/v1/tasks/{task['id']}"), "/api/v1/tasks/{task_id}", "get"
    )
    assert done["id"] == task["id"]
    final = sim_server.wait_task(task["id"])
    assert final["status"] == "SUCCEEDED" and final["result"] == {"findings": []}
    assert final["progress_percent"] == 100

    resp = sim_server.request("POST", f"{base}/snapshots", json={"label": "x"}, key=key())
    contract.check(resp, SDDC + "/snapshots", "post")
    snap_id = sim_server.wait_task(resp.json()["id"])["result"]["snapshot_id"]

    resp = sim_server.request(
        "POST", f"{base}/components/vcenter/upgrade", json={"target_version": "1.26.0"}, key=key()
    )
    contract.check(resp, SDDC + "/components/{component}/upgrade", "post")
    sim_server.wait_task(resp.json()["id"])

    host = sim_server.sddc(sid)["hosts"][0]["id"]
    resp = sim_server.request("PUT", f"{base}/hosts/{host}/maintenance", json={"enabled": True}, key=key())
    contract.check(resp, SDDC + "/hosts/{host_id}/maintenance", "put")
    sim_server.wait_task(resp.json()["id"])

    resp = sim_server.request(
        "POST", f"{base}/hosts/{host}/upgrade", json={"target_version": "1.26.0"}, key=key()
    )
    problem = contract.check(resp, SDDC + "/hosts/{host_id}/upgrade", "post")
    assert resp.status_code == 409 and problem["code"] == "COMPONENT_ORDER"

    resp = sim_server.request("POST", f"{base}/rollback", json={"snapshot_id": snap_id}, key=key())
    contract.check(resp, SDDC + "/rollback", "post")
    rolled = sim_server.wait_task(resp.json()["id"])
    assert rolled["status"] == "SUCCEEDED"
    listed = contract.check(sim_server.request("GET", f"{base}/tasks?limit=200"), SDDC + "/tasks", "get")
    assert [t["type"] for t in listed["items"]][:2] == ["ROLLBACK", "HOST_MAINTENANCE"]


def test_problems_match_contract(sim_server: SimServer, contract: Contract) -> None:
    cases: list[tuple[str, str, str, dict[str, Any] | None, int, str, str | None]] = [
        ("GET", "/api/v1/sddcs/sddc-9999", SDDC, None, 404, "get", None),
        ("GET", "/api/v1/sddcs/BAD_ID", SDDC, None, 404, "get", None),
        ("GET", "/api/v1/tasks/nope", "/api/v1/tasks/{task_id}", None, 404, "get", None),
        ("GET", "/api/v1/sddcs?limit=0", "/api/v1/sddcs", None, 400, "get", None),
        ("GET", "/api/v1/sddcs?label=bad", "/api/v1/sddcs", None, 400, "get", None),
        (
            "POST",
            "/api/v1/sddcs/sddc-0015/prechecks",
            SDDC + "/prechecks",
            {"target_version": "x"},
            400,
            "post",
            None,
        ),
        (
            "POST",
            "/api/v1/sddcs/sddc-0015/prechecks",
            SDDC + "/prechecks",
            {"target_version": "7.7.7"},
            422,
            "post",
            "UNKNOWN_RELEASE",
        ),
        (
            "POST",
            "/api/v1/sddcs/sddc-0015/components/esx/upgrade",
            SDDC + "/components/{component}/upgrade",
            {"target_version": "1.26.0"},
            404,
            "post",
            None,
        ),
        (
            "PUT",
            "/api/v1/sddcs/sddc-0015/hosts/sddc-0015-c9-h9/maintenance",
            SDDC + "/hosts/{host_id}/maintenance",
            {"enabled": True},
            404,
            "put",
            None,
        ),
        (
            "PUT",
            "/api/v1/sddcs/sddc-0015/hosts/sddc-0015-c1-h1/maintenance",
            SDDC + "/hosts/{host_id}/maintenance",
            {"enabled": "yes"},
            422,
            "put",
            "INVALID_BODY",
        ),
        (
            "POST",
            "/api/v1/sddcs/sddc-0015/rollback",
            SDDC + "/rollback",
            {"snapshot_id": "snap-none"},
            404,
            "post",
            "SNAPSHOT_NOT_FOUND",
        ),
        ("POST", "/api/v1/sddcs/sddc-0015/rollback", SDDC + "/rollback", {}, 422, "post", "INVALID_BODY"),
    ]
    for method, path, template, body, status, op, code in cases:
        resp = sim_server.request(method, path, json=body, key=key() if body is not None else None)
        assert resp.status_code == status, (path, resp.text)
        problem = contract.check(resp, template, op)
        assert problem["status"] == status and problem["title"] and problem["detail"] and problem["code"]
        if code:
            assert problem["code"] == code


def test_auth_401_and_403(sim_server: SimServer, contract: Contract) -> None:
    for headers in ({"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer wrong"}):
        resp = sim_server.request("GET", "/api/v1/sddcs/sddc-0001", headers=headers)
        assert contract.check(resp, SDDC, "get")["status"] == 401
    resp = sim_server.client.get(sim_server.url + "/api/v1/sddcs")
    assert contract.check(resp, "/api/v1/sddcs", "get")["code"] == "UNAUTHORIZED"
    assert sim_server.request("GET", "/sim/counters", token="wrong").status_code == 401
    sim_server.faults(forbidden_sddc_ids=["sddc-0011"])
    resp = sim_server.request("GET", "/api/v1/sddcs/sddc-0011")
    assert contract.check(resp, SDDC, "get")["code"] == "FORBIDDEN"
    resp = sim_server.request("POST", "/api/v1/sddcs/sddc-0011/prechecks", json={"target_version": "1.26.0"})
    assert resp.status_code == 403
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0012").status_code == 200


def test_list_filters_and_paging(sim_server: SimServer, contract: Contract) -> None:
    state = sim_server.state()
    all_ids = [s["id"] for s in state["sddcs"]]
    seen: list[str] = []
    cursor = None
    while True:
        path = "/api/v1/sddcs?limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = contract.check(sim_server.request("GET", path), "/api/v1/sddcs", "get")
        seen += [s["id"] for s in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == all_ids
    by = {s["id"]: s for s in state["sddcs"]}
    region = by["sddc-0001"]["region"]
    items = sim_server.request("GET", f"/api/v1/sddcs?region={region}&limit=500").json()["items"]
    assert {s["id"] for s in items} == {i for i, s in by.items() if s["region"] == region}
    items = sim_server.request("GET", "/api/v1/sddcs?version=1.24.0").json()["items"]
    assert {s["id"] for s in items} == {i for i, s in by.items() if s["version"] == "1.24.0"}
    tier = by["sddc-0001"]["labels"]["tier"]
    items = sim_server.request("GET", f"/api/v1/sddcs?label=tier={tier}&label=env=prod").json()["items"]
    expect = {i for i, s in by.items() if s["labels"]["tier"] == tier and s["labels"]["env"] == "prod"}
    assert {s["id"] for s in items} == expect and expect
    canary = sim_server.request("GET", "/api/v1/sddcs?label=canary=true").json()["items"]
    assert [s["id"] for s in canary] == ["sddc-0002", "sddc-0022"]
    assert sim_server.request("GET", "/api/v1/sddcs?cursor=%%%").status_code == 400


def test_tasks_list_filters_newest_first(sim_server: SimServer, contract: Contract) -> None:
    sid = "sddc-0016"
    first = run(sim_server, "POST", f"/api/v1/sddcs/{sid}/prechecks", {"target_version": "1.26.0"})
    snapshot(sim_server, sid)
    items = sim_server.request("GET", f"/api/v1/sddcs/{sid}/tasks").json()["items"]
    assert [t["type"] for t in items] == ["SNAPSHOT", "PRECHECK"]
    only = sim_server.request("GET", f"/api/v1/sddcs/{sid}/tasks?type=PRECHECK&status=SUCCEEDED").json()[
        "items"
    ]
    assert [t["id"] for t in only] == [first["id"]]
    assert (
        sim_server.request("GET", f"/api/v1/sddcs/{sid}/tasks?limit=1").json()["items"][0]["type"]
        == "SNAPSHOT"
    )
    assert sim_server.request("GET", f"/api/v1/sddcs/{sid}/tasks?status=FAILED").json()["items"] == []
    assert sim_server.request("GET", f"/api/v1/sddcs/{sid}/tasks?type=NOPE").status_code == 400
