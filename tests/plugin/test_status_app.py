"""The /rce status view: needs an Airflow login, then shows the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rce_lib.airflow_support import ledger_conn
from rce_lib.ledger import Ledger, Phase
from rce_lib.plugin.status_app import create_app


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    url = f"sqlite:///{tmp_path}/rce_ledger.db"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    ledger_conn._ledger_for.cache_clear()
    ledger = Ledger(url)
    ledger.phase_started("r", "canary", "sddc-0001", "run-1", Phase.UPGRADE_NSX, target_version="1.26.0")
    ledger.phase_failed(
        "r",
        "canary",
        "sddc-0002",
        "run-1",
        Phase.UPGRADE_HOSTS,
        code="HOST_DISCONNECTED",
        message="host <h1> down",
        retryable=True,
    )
    return ledger


def test_refuses_requests_without_an_airflow_login(ledger: Ledger) -> None:
    from airflow.api_fastapi.app import create_auth_manager

    create_auth_manager()  # what the api-server does at start; no users needed to refuse a bad token
    client = TestClient(create_app())
    assert client.get("/progress").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)


def test_shows_every_sddc_once_logged_in(ledger: Ledger) -> None:
    from airflow.api_fastapi.core_api.security import get_user

    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    client = TestClient(app)
    rows = client.get("/progress", params={"wave": "canary"}).json()
    assert {(r["sddc_id"], r["phase"], r["status"]) for r in rows} == {
        ("sddc-0001", "upgrade_nsx", "running"),
        ("sddc-0002", "upgrade_hosts", "failed"),
    }
    page = client.get("/").text
    assert "sddc-0002" in page and "[HOST_DISCONNECTED] host &lt;h1&gt; down" in page
    assert "<th>grid</th>" in page and "canary[0]" not in page  # no cohort recorded: no placement
    ledger.append_event(
        "r",
        "canary",
        "cohort_resolved",
        run_id="run-1",
        data={"members": ["sddc-0001", "sddc-0002"], "canary": ["sddc-0002"]},
    )
    page = client.get("/").text
    assert "<td>sddc-0002</td><td>canary[0]</td>" in page and "<td>sddc-0001</td><td>bulk[0]</td>" in page
    assert client.get("/progress", params={"wave": "x" * 200}).status_code == 422


def test_serves_the_metrics_to_a_logged_in_user(ledger: Ledger) -> None:
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    from rce_lib.plugin import status_app

    status_app._registry.cache_clear()
    create_auth_manager()
    assert TestClient(create_app()).get("/metrics").status_code == 401
    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    resp = TestClient(app).get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert (
        'rce_phase_total{outcome="failed",phase="upgrade_hosts",reason="HOST_DISCONNECTED",wave="canary"} 1.0'
        in resp.text
    )
    assert 'rce_sddcs{state="running",wave="canary"} 1.0' in resp.text
