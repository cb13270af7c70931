"""Fault injection: server errors, drops, latency, task failures, unknown fields and statuses."""

from __future__ import annotations

import time

import httpx
import pytest
from _sim_contract import Contract
from _sim_flow import key, run, start

from tests.conftest import SimFactory, SimServer

V26 = {"target_version": "1.26.0"}


def test_error_rate_answers_500_problem(sim_server: SimServer) -> None:
    sim_server.faults(error_rate=1.0)
    resp = sim_server.request("GET", "/api/v1/sddcs/sddc-0001")
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["code"] == "INTERNAL_ERROR"
    resp = sim_server.request("POST", "/api/v1/sddcs/sddc-0018/prechecks", json=V26, key=key())
    assert resp.status_code == 500
    assert sim_server.request("GET", "/sim/state").status_code == 200  # admin API is never faulted
    sim_server.faults(error_rate=0.3)
    codes = [sim_server.request("GET", "/api/v1/releases/1.25.0").status_code for _ in range(60)]
    assert 5 <= codes.count(500) <= 35 and codes.count(200) == 60 - codes.count(500)
    counters = sim_server.counters()
    assert counters["injected"]["error"] == 2 + codes.count(500)
    assert counters["tasks_created"] == {}


def test_drop_closes_connection(sim_server: SimServer) -> None:
    sim_server.faults(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        sim_server.request("GET", "/api/v1/sddcs/sddc-0001")
    sim_server.faults(drop_rate=0.0, mutations_only=True, error_rate=1.0)
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0001").status_code == 200
    assert sim_server.request("POST", "/api/v1/sddcs/sddc-0018/snapshots", json={}).status_code == 500
    counters = sim_server.counters()
    assert counters["injected"]["drop"] == 1
    assert {"method": "GET", "route": "/api/v1/sddcs/{sddc_id}", "status": "dropped", "count": 1} in counters[
        "requests"
    ]


def test_latency(sim_server: SimServer) -> None:
    sim_server.faults(latency_ms=150, latency_jitter_ms=50)
    t0 = time.monotonic()
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0001").status_code == 200
    assert 0.15 <= time.monotonic() - t0 < 2.0


def test_task_failures(sim_server: SimServer) -> None:
    sid = "sddc-0012"
    base = f"/api/v1/sddcs/{sid}"
    sim_server.faults(fail_next={"UPGRADE_VCENTER": 1})
    failed = run(sim_server, "POST", f"{base}/components/vcenter/upgrade", V26, status="FAILED")
    assert failed["error"]["code"] == "UPGRADE_FAILED" and failed["error"]["retryable"] is True
    assert (
        sim_server.sddc(sid)["components"]["vcenter"]
        != sim_server.request("GET", "/api/v1/releases/1.26.0").json()["components"]["vcenter"]
    )
    run(sim_server, "POST", f"{base}/components/vcenter/upgrade", V26)  # the next one succeeds
    assert sim_server.request("GET", "/sim/faults").json()["fail_next"] == {"UPGRADE_VCENTER": 0}
    sim_server.faults(fail_sddc_ids=[sid], fail_task_types=["HOST_MAINTENANCE"], task_failure_retryable=False)
    host = sim_server.sddc(sid)["hosts"][0]["id"]
    run(sim_server, "POST", f"{base}/components/nsx/upgrade", V26)
    task = run(sim_server, "PUT", f"{base}/hosts/{host}/maintenance", {"enabled": True}, status="FAILED")
    assert task["error"] == {
        "code": "HOST_UNREACHABLE",
        "retryable": False,
        "message": f"simulated failure of HOST_MAINTENANCE on {sid}",
    }
    assert sim_server.sddc(sid)["hosts"][0]["state"] == "CONNECTED"
    sim_server.faults(fail_sddc_ids=[], task_failure_rate=1.0)
    assert (
        run(sim_server, "POST", f"{base}/snapshots", {}, status="FAILED")["error"]["code"] == "UPGRADE_FAILED"
    )


def test_extra_fields_still_match_contract(sim_server: SimServer, contract: Contract) -> None:
    sim_server.faults(extra_fields=True)
    resp = sim_server.request("GET", "/api/v1/sddcs/sddc-0001")
    body = contract.check(resp, "/api/v1/sddcs/{sddc_id}", "get")
    assert "x_sim_extra" in body and all("x_sim_extra" in h for h in body["hosts"])
    page = contract.check(sim_server.request("GET", "/api/v1/sddcs?limit=2"), "/api/v1/sddcs", "get")
    assert "x_sim_extra" in page and "x_sim_extra" in page["items"][0]
    problem = sim_server.request("GET", "/api/v1/sddcs/sddc-9999")
    assert "x_sim_extra" in contract.check(problem, "/api/v1/sddcs/{sddc_id}", "get")


def test_unknown_task_status(sim_factory: SimFactory, contract: Contract) -> None:
    sim = sim_factory(size=6, time_scale=60)
    sim.faults(unknown_task_status_rate=1.0)
    task = start(sim, "POST", "/api/v1/sddcs/sddc-0001/snapshots", {})
    time.sleep(0.1)
    seen = sim.request("GET", f"/api/v1/tasks/{task['id']}").json()
    assert seen["status"] == "PAUSED"
    with pytest.raises(Exception, match="PAUSED"):  # the enum may grow: the contract schema does not know it
        contract.schema_validate("Task", seen)
    listed = sim.request("GET", "/api/v1/sddcs/sddc-0001/tasks").json()["items"]
    assert listed[0]["status"] == "PAUSED"


def test_slow_answers_arrive_late(sim_server: SimServer) -> None:
    sim_server.faults(slow_rate=1.0, slow_ms=300)
    t0 = time.monotonic()
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0001").status_code == 200
    assert time.monotonic() - t0 >= 0.3
    sim_server.faults(slow_rate=0.0)
    t0 = time.monotonic()
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0001").status_code == 200
    assert time.monotonic() - t0 < 0.3


def test_storms_answer_every_request_429_until_they_end(sim_server: SimServer) -> None:
    """storm_every_s 3, storm_duration_s 1.5: quiet for 1.5 s after posting, then a storm."""
    sim_server.faults(storm_every_s=3, storm_duration_s=1.5)
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0001").status_code == 200
    time.sleep(1.6)
    resp = sim_server.request("GET", "/api/v1/sddcs/sddc-0002")
    assert resp.status_code == 429 and resp.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(resp.headers["Retry-After"]) <= 2
    assert (
        sim_server.request("POST", "/api/v1/sddcs/sddc-0018/snapshots", json={}, key=key()).status_code == 429
    )
    time.sleep(int(resp.headers["Retry-After"]))  # the Retry-After ends the storm
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0002").status_code == 200
    counters = sim_server.counters()
    assert counters["injected"]["storm"] == 2 and counters["tasks_created"] == {}
    assert counters["retry_after_violations"]["count"] == 0


def test_echo_auth_puts_the_callers_token_in_problem_bodies(sim_server: SimServer) -> None:
    sim_server.faults(echo_auth=True, error_rate=1.0)
    resp = sim_server.request("GET", "/api/v1/sddcs/sddc-0001")
    assert resp.status_code == 500 and f"Bearer {sim_server.token}" in resp.json()["detail"]
    sim_server.faults(error_rate=0.0)
    resp = sim_server.request("GET", "/api/v1/sddcs/sddc-9999")
    assert resp.status_code == 404 and sim_server.token in resp.json()["detail"]
    assert sim_server.request("GET", "/api/v1/sddcs/sddc-0001").status_code == 200
    assert sim_server.counters()["injected"]["echo_auth"] == 2


def test_unknown_task_statuses_are_counted(sim_factory: SimFactory) -> None:
    sim = sim_factory(size=6, time_scale=60)
    sim.faults(unknown_task_status_rate=1.0)
    task = start(sim, "POST", "/api/v1/sddcs/sddc-0001/snapshots", {})
    time.sleep(0.1)
    assert sim.request("GET", f"/api/v1/tasks/{task['id']}").json()["status"] == "PAUSED"
    assert sim.counters()["injected"]["unknown_status"] >= 1
