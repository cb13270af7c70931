"""Drive one SDDC through the contract's upgrade sequence (the same order the engine uses)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import httpx


class Sim(Protocol):
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
        token: str | None = None,
    ) -> httpx.Response: ...
    def wait_task(self, task_id: str, timeout: float = 15.0) -> dict[str, Any]: ...
    def sddc(self, sddc_id: str) -> dict[str, Any]: ...


def key() -> str:
    return f"test-{uuid.uuid4().hex}"


def start(sim: Sim, method: str, path: str, body: dict[str, Any], expect: int = 202) -> dict[str, Any]:
    resp = sim.request(method, path, json=body, key=key())
    assert resp.status_code == expect, resp.text
    return resp.json()  # type: ignore[no-any-return]


def run(sim: Sim, method: str, path: str, body: dict[str, Any], status: str = "SUCCEEDED") -> dict[str, Any]:
    task = sim.wait_task(start(sim, method, path, body)["id"])
    assert task["status"] == status, task
    return task


def snapshot(sim: Sim, sddc_id: str) -> str:
    task = run(sim, "POST", f"/api/v1/sddcs/{sddc_id}/snapshots", {"label": "pre-upgrade"})
    return str(task["result"]["snapshot_id"])


def upgrade_components(sim: Sim, sddc_id: str, target: str) -> None:
    base = f"/api/v1/sddcs/{sddc_id}"
    run(sim, "POST", f"{base}/components/vcenter/upgrade", {"target_version": target})
    run(sim, "POST", f"{base}/components/nsx/upgrade", {"target_version": target})


def upgrade_hosts(sim: Sim, sddc_id: str, target: str) -> None:
    base = f"/api/v1/sddcs/{sddc_id}"
    for host in sim.sddc(sddc_id)["hosts"]:
        run(sim, "PUT", f"{base}/hosts/{host['id']}/maintenance", {"enabled": True})
        run(sim, "POST", f"{base}/hosts/{host['id']}/upgrade", {"target_version": target})
        run(sim, "PUT", f"{base}/hosts/{host['id']}/maintenance", {"enabled": False})


def full_upgrade(sim: Sim, sddc_id: str, target: str) -> str:
    """precheck, snapshot, vcenter, nsx, hosts; returns the snapshot id."""
    run(sim, "POST", f"/api/v1/sddcs/{sddc_id}/prechecks", {"target_version": target})
    snap = snapshot(sim, sddc_id)
    upgrade_components(sim, sddc_id, target)
    upgrade_hosts(sim, sddc_id, target)
    return snap
