"""Capacity (503), request rate (429), both Retry-After forms and the counters that catch
clients which retry too early or start work twice."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from _sim_contract import Contract
from _sim_flow import key

from tests.conftest import SimFactory

V26 = {"target_version": "1.26.0"}
PRECHECK = "/api/v1/sddcs/{sddc_id}/prechecks"


def test_capacity_503_retry_after_and_violations(sim_factory: SimFactory, contract: Contract) -> None:
    # PRECHECK takes 120 simulated s = 2 real s at time scale 60; vcenter capacity 1.
    sim = sim_factory(size=6, time_scale=60, config={"capacity": {"vcenter": 1}})
    first = sim.request("POST", "/api/v1/sddcs/sddc-0001/prechecks", json=V26, key="k-first")
    assert first.status_code == 202
    k = "k-second"
    resp = sim.request("POST", "/api/v1/sddcs/sddc-0002/prechecks", json=V26, key=k)
    problem = contract.check(resp, PRECHECK, "post")
    assert resp.status_code == 503 and problem["code"] == "SERVICE_AT_CAPACITY"
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    # esx is another service: not blocked by vcenter capacity
    host = sim.sddc("sddc-0003")["hosts"][0]["id"]
    ok = sim.request(
        "PUT", f"/api/v1/sddcs/sddc-0003/hosts/{host}/maintenance", json={"enabled": True}, key=key()
    )
    assert ok.status_code == 202
    early = sim.request("POST", "/api/v1/sddcs/sddc-0002/prechecks", json=V26, key=k)  # too early
    assert early.status_code == 503
    counters = sim.counters()
    assert counters["retry_after_violations"]["count"] == 1
    assert counters["retry_after_violations"]["details"][0]["identity"] == f"key:{k}"
    assert counters["capacity_503"] == {"vcenter": 2} and counters["http_503"] == {"vcenter": 2}
    assert counters["concurrent"]["vcenter"] == {"current": 1, "peak": 1}
    assert counters["duplicate_starts"]["count"] == 0  # refused for capacity: not a duplicate
    time.sleep(int(early.headers["Retry-After"]) + 0.05)
    later = sim.request("POST", "/api/v1/sddcs/sddc-0002/prechecks", json=V26, key=k)
    assert later.status_code == 202, later.text  # the 503 did not bind the key
    counters = sim.counters()
    assert counters["retry_after_violations"]["count"] == 1
    assert counters["tasks_created"] == {"PRECHECK": 2, "HOST_MAINTENANCE": 1}


def test_capacity_lowered_mid_run_refuses_new_starts_and_lets_running_ones_finish(
    sim_factory: SimFactory,
) -> None:
    sim = sim_factory(size=6, time_scale=60)  # PRECHECK: 2 real s
    for n in (1, 2):
        started = sim.request("POST", f"/api/v1/sddcs/sddc-000{n}/prechecks", json=V26, key=key())
        assert started.status_code == 202
    sim.faults(capacity={"vcenter": 1})
    refused = sim.request("POST", "/api/v1/sddcs/sddc-0003/prechecks", json=V26, key=key())
    assert refused.status_code == 503 and refused.json()["code"] == "SERVICE_AT_CAPACITY"
    assert "runs 1 tasks" in refused.json()["detail"]
    assert sim.counters()["concurrent"]["vcenter"]["current"] == 2  # the running ones go on
    sim.faults(capacity={})  # back to the configured capacity
    assert sim.request("POST", "/api/v1/sddcs/sddc-0003/prechecks", json=V26, key=key()).status_code == 202


def test_a_capacity_fault_for_an_unknown_service_is_refused(sim_factory: SimFactory) -> None:
    sim = sim_factory(size=2)
    resp = sim.request("POST", "/sim/faults", json={"capacity": {"ntp": 1}})
    assert resp.status_code == 422 and "unknown service" in resp.text
    resp = sim.request("POST", "/sim/faults", json={"capacity": {"nsx": -1}})
    assert resp.status_code == 422


def test_rate_limit_429_with_http_date(sim_factory: SimFactory, contract: Contract) -> None:
    sim = sim_factory(
        size=6,
        config={
            "retry_after_format": "http-date",
            "mutation_rate": {"vcenter": {"rate": 0.5, "burst": 1}},
            "read_rate": {"rate": 1, "burst": 3},
        },
    )
    assert sim.request("POST", "/api/v1/sddcs/sddc-0001/prechecks", json=V26, key=key()).status_code == 202
    resp = sim.request("POST", "/api/v1/sddcs/sddc-0002/prechecks", json=V26, key=key())
    problem = contract.check(resp, PRECHECK, "post")
    assert resp.status_code == 429 and problem["code"] == "RATE_LIMITED"
    when = parsedate_to_datetime(resp.headers["Retry-After"]).timestamp()
    assert time.time() + 0.5 < when <= time.time() + 3.5
    statuses = [sim.request("GET", "/api/v1/sddcs/sddc-0001").status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    assert sim.counters()["retry_after_violations"]["count"] == 0
    last = sim.request("GET", "/api/v1/sddcs/sddc-0001")  # the same GET again, before its Retry-After
    assert last.status_code == 429
    contract.check(last, "/api/v1/sddcs/{sddc_id}", "get")
    counters = sim.counters()
    assert counters["http_429"]["vcenter"] == 1 and counters["http_429"]["read"] == 2
    violation = counters["retry_after_violations"]
    assert violation["count"] == 1 and violation["details"][0]["path"] == "/api/v1/sddcs/sddc-0001"


def test_retry_after_seconds_form_and_fault_override(sim_factory: SimFactory) -> None:
    sim = sim_factory(size=6, config={"rate_limits_enabled": False})
    sim.faults(throttle_rate=1.0, throttle_retry_after_s=3)
    resp = sim.request("GET", "/api/v1/sddcs/sddc-0001")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "3"
    sim.faults(retry_after_format="http-date")
    resp = sim.request("GET", "/api/v1/sddcs/sddc-0002")
    assert resp.status_code == 503
    assert parsedate_to_datetime(resp.headers["Retry-After"]).timestamp() >= time.time() + 2
    sim.faults(retry_after_format="mixed")
    forms = {
        sim.request("GET", f"/api/v1/sddcs/sddc-000{i}").headers["Retry-After"].isdigit() for i in range(1, 7)
    }
    forms |= {
        sim.request("GET", f"/api/v1/releases/1.2{i}.0").headers["Retry-After"].isdigit() for i in (4, 5, 6)
    }
    assert forms == {True, False}
    assert sim.counters()["injected"]["throttle"] == 11
    # many GETs of one SDDC read bucket: disabled limits never answer 429
    sim.faults(reset=True)
    assert {sim.request("GET", "/api/v1/sddcs").status_code for _ in range(30)} == {200}


def test_peak_concurrency_and_reset_counters(sim_factory: SimFactory) -> None:
    sim = sim_factory(size=6, time_scale=60)
    for n in range(1, 5):
        assert (
            sim.request("POST", f"/api/v1/sddcs/sddc-000{n}/snapshots", json={}, key=key()).status_code == 202
        )
    counters = sim.counters()
    assert counters["concurrent"]["vcenter"] == {"current": 4, "peak": 4}
    assert counters["mutating_calls"] == 4 and counters["tasks_created"] == {"SNAPSHOT": 4}
    route = [r for r in counters["requests"] if r["route"] == "/api/v1/sddcs/{sddc_id}/snapshots"]
    assert route == [
        {"method": "POST", "route": "/api/v1/sddcs/{sddc_id}/snapshots", "status": "202", "count": 4}
    ]
    dup = sim.request("POST", "/api/v1/sddcs/sddc-0001/snapshots", json={}, key=key())
    assert dup.status_code == 409
    assert sim.counters()["duplicate_starts"]["details"][0]["type"] == "SNAPSHOT"
    reset = sim.reset_counters()
    assert reset["requests_total"] == 0 and reset["duplicate_starts"]["count"] == 0
    assert reset["concurrent"]["vcenter"] == {"current": 4, "peak": 4}
