"""Drift injection on tasks and bodies outside the contract (for the reconciliation tests)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _start_vcenter(sim: Any, sddc_id: str, key: str) -> dict[str, Any]:
    resp = sim.request(
        "POST",
        f"/api/v1/sddcs/{sddc_id}/components/vcenter/upgrade",
        json={"target_version": "1.26.0"},
        key=key,
    )
    assert resp.status_code == 202, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_task_failed_ends_a_running_task_without_its_effect(sim_factory: Any) -> None:
    sim = sim_factory(size=2, time_scale=1)  # an hour-long vCenter upgrade: still running below
    task = _start_vcenter(sim, "sddc-0001", "k-fail")
    before = sim.sddc("sddc-0001")["components"]["vcenter"]

    assert sim.drift(kind="task_failed", task_id=task["id"])["status"] == "FAILED"

    got = sim.request("GET", f"/api/v1/tasks/{task['id']}").json()
    assert got["status"] == "FAILED" and got["error"]["code"] == "FAILED_OUT_OF_BAND"
    sddc = sim.sddc("sddc-0001")
    assert sddc["components"]["vcenter"] == before and sddc["active_task_ids"] == []
    again = sim.request("POST", "/sim/drift", json={"kind": "task_failed", "task_id": task["id"]})
    assert again.status_code == 409


def test_task_purged_is_unknown_even_after_a_restart(sim_factory: Any) -> None:
    sim = sim_factory(size=2, time_scale=1)
    task = _start_vcenter(sim, "sddc-0002", "k-purge")

    sim.drift(kind="task_purged", task_id=task["id"])

    assert sim.request("GET", f"/api/v1/tasks/{task['id']}").status_code == 404
    assert sim.sddc("sddc-0002")["active_task_ids"] == []
    sim.restart()
    assert sim.request("GET", f"/api/v1/tasks/{task['id']}").status_code == 404
    # the key was forgotten with its task: the same key starts a new task
    assert _start_vcenter(sim, "sddc-0002", "k-purge")["id"] != task["id"]


def test_malformed_sddc_body_breaks_the_contract_only_when_asked(sim_factory: Any) -> None:
    sim = sim_factory(size=2)
    sim.faults(malformed_sddc_ids=["sddc-0001"])
    bad = sim.sddc("sddc-0001")
    assert bad["version"] == "latest" and "hosts" not in bad
    assert "hosts" in sim.sddc("sddc-0002")
    sim.reset_faults()
    assert "hosts" in sim.sddc("sddc-0001")
