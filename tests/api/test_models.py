"""The contract models: unknown fields ignored, enums open-ended as the contract says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rce_lib.api.models import (
    Health,
    HostState,
    Release,
    Sddc,
    SddcStatus,
    Task,
    TaskStatus,
    version_tuple,
)

CONTRACT = Path(__file__).resolve().parents[2] / "include" / "contracts" / "sddc-api.yaml"

TASK: dict[str, Any] = {
    "id": "task-1",
    "sddc_id": "sddc-0001",
    "type": "UPGRADE_NSX",
    "status": "RUNNING",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:01:00Z",
}
SDDC: dict[str, Any] = {
    "id": "sddc-0001",
    "org_id": "org-1",
    "region": "us-east-1",
    "version": "1.25.0",
    "status": "READY",
    "host_count": 1,
    "labels": {"tier": "gold"},
    "components": {"vcenter": "8.0.2", "nsx": "4.1.2"},
    "hosts": [{"id": "h1", "cluster_id": "c1", "version": "8.0.2", "state": "CONNECTED"}],
}


def test_vendored_contract_is_the_published_one() -> None:
    published = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "sddc-api.yaml"
    if published.exists():  # beside the repo on the team's machines and in CI
        assert CONTRACT.read_text() == published.read_text()
    spec = yaml.safe_load(CONTRACT.read_text())
    assert spec["info"]["title"] == "SDDC Control API"


def test_unknown_fields_are_ignored_everywhere() -> None:
    task = Task.model_validate({**TASK, "new_field": {"x": 1}, "error": None})
    sddc = Sddc.model_validate({**SDDC, "shiny": True, "hosts": [{**SDDC["hosts"][0], "rack": 7}]})
    assert task.status is TaskStatus.RUNNING
    assert sddc.hosts[0].state is HostState.CONNECTED


@pytest.mark.parametrize("status", ["PAUSED", "WAITING_FOR_APPROVAL", ""])
def test_an_unknown_task_status_is_not_terminal(status: str) -> None:
    task = Task.model_validate({**TASK, "status": status})
    assert task.status is TaskStatus.UNKNOWN
    assert not task.terminal


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED", "CANCELED"])
def test_terminal_statuses(status: str) -> None:
    assert Task.model_validate({**TASK, "status": status}).terminal


def test_an_unknown_sddc_status_is_not_ready() -> None:
    sddc = Sddc.model_validate({**SDDC, "status": "QUARANTINED"})
    assert sddc.status is SddcStatus.UNKNOWN
    assert not sddc.ready
    assert Sddc.model_validate(SDDC).ready


@pytest.mark.parametrize(
    "patch",
    [
        {"id": "SDDC-1"},  # the contract's id pattern
        {"id": "../etc"},
        {"version": "1.25"},
        {"host_count": -1},
        {"components": {"vcenter": "x"}},
        {"hosts": "none"},
    ],
)
def test_malformed_sddcs_are_refused(patch: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Sddc.model_validate({**SDDC, **patch})


def test_health_bounds_and_release_paths() -> None:
    with pytest.raises(ValidationError):
        Health.model_validate(
            {"sddc_id": "s", "status": "HEALTHY", "window_s": 300, "error_rate": 1.5, "p95_latency_ms": 1}
        )
    release = Release.model_validate(
        {
            "version": "1.26.0",
            "components": {"vcenter": "a", "nsx": "b", "esx": "c"},
            "upgrade_from": ["1.25.0"],
        }
    )
    assert release.upgrade_from == ["1.25.0"]
    assert version_tuple("1.10.0") > version_tuple("1.9.0")
