"""The admin endpoint that sets an SDDC's maintenance window (as its customer would)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

WINDOW = {"day_of_week": 6, "start_hour_utc": 22, "duration_hours": 6}


def test_set_window_shows_in_the_contract_api_and_survives_a_restart(sim_factory: Any) -> None:
    sim = sim_factory(size=2)
    assert sim.set_window("sddc-0001", WINDOW)["maintenance_window"] == WINDOW
    assert sim.sddc("sddc-0001")["maintenance_window"] == WINDOW
    listed = {s["id"]: s for s in sim.request("GET", "/api/v1/sddcs").json()["items"]}
    assert listed["sddc-0001"]["maintenance_window"] == WINDOW
    assert sim.counters()["mutating_calls"] == 0  # admin calls are not the engine's calls
    sim.restart()
    assert sim.sddc("sddc-0001")["maintenance_window"] == WINDOW
    assert sim.set_window("sddc-0001", None)["maintenance_window"] is None
    assert sim.sddc("sddc-0001")["maintenance_window"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"maintenance_window": {**WINDOW, "duration_hours": 169}}, 422),
        ({"maintenance_window": {**WINDOW, "day_of_week": 7}}, 422),
        ({"maintenance_window": {"day_of_week": 1}}, 422),
    ],
)
def test_bad_windows_are_refused(sim_factory: Any, body: dict[str, Any], status: int) -> None:
    sim = sim_factory(size=1)
    resp = sim.request("POST", "/sim/sddcs/sddc-0001/maintenance_window", json=body)
    assert resp.status_code == status and resp.json()["code"] == "INVALID_WINDOW"


def test_unknown_sddc_is_404(sim_factory: Any) -> None:
    sim = sim_factory(size=1)
    resp = sim.request("POST", "/sim/sddcs/sddc-0099/maintenance_window", json={"maintenance_window": None})
    assert resp.status_code == 404
