"""Triggers carry the ledger URL in their kwargs, which Airflow stores in its trigger table
and shows in the UI: a PostgreSQL password must never be there. The kwargs hold the URL
with the password masked; the triggerer resolves it again from RCE_LEDGER_URL or the
`rce_state` connection, as the task did, and refuses a ledger that is not the same one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rce_lib.airflow_support import ledger_conn
from rce_lib.airflow_support.ledger_conn import LedgerConfigError, public_url, resolve_public_url
from rce_lib.metrics import downstream
from rce_lib.triggers import _ledger
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger
from rce_lib.triggers.maintenance_window import MaintenanceWindowTrigger

PASSWORD = "Zq9-ledger-PASSWORD-only-here"
REAL = f"postgresql+psycopg2://rce:{PASSWORD}@db.internal:5432/rce_ledger"
MASKED = "postgresql+psycopg2://rce:%2A%2A%2A@db.internal:5432/rce_ledger"  # *** in a URL


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RCE_LEDGER_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_RCE_STATE", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")


def _triggers() -> list[Any]:
    return [
        LedgerSlotTrigger(ledger_url=REAL, rollout="r", wave="w", run_id="run", limit=1),
        DownstreamTaskTrigger(task_id="t-1", metrics_ledger_url=REAL),
        MaintenanceWindowTrigger(
            opens_at="2026-01-01T00:00:00+00:00",
            sddc_id="sddc-0001",
            window={"day_of_week": 0, "start_hour_utc": 1, "duration_hours": 4},
            metrics_ledger_url=REAL,
        ),
    ]


@pytest.mark.parametrize("trigger", _triggers(), ids=lambda t: type(t).__name__)
def test_trigger_kwargs_never_hold_the_ledger_password(trigger: Any) -> None:
    classpath, kwargs = trigger.serialize()
    text = json.dumps(kwargs) + repr(trigger) + repr(vars(trigger))
    assert PASSWORD not in text
    assert MASKED in text
    assert type(trigger)(**kwargs).serialize() == (classpath, kwargs)  # still round-trips exactly


def test_urls_without_a_password_are_kept_as_they_are() -> None:
    for url in ("sqlite:////tmp/ledger.db", "postgresql+psycopg2://rce@db/rce_ledger"):
        assert public_url(url) == url == resolve_public_url(url)


def test_the_triggerer_resolves_the_password_from_rce_ledger_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCE_LEDGER_URL", REAL)
    assert asyncio.run(_ledger.resolved(MASKED)) == REAL


def test_the_triggerer_resolves_the_password_from_the_rce_state_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_RCE_STATE", json.dumps({"conn_type": "postgres", "extra": {"url": REAL}})
    )
    assert asyncio.run(_ledger.resolved(MASKED)) == REAL


def test_a_different_ledger_in_the_triggerer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCE_LEDGER_URL", REAL.replace("db.internal", "other-db"))
    with pytest.raises(LedgerConfigError) as info:
        resolve_public_url(MASKED)
    assert PASSWORD not in str(info.value) and "other-db" in str(info.value)


def test_metrics_of_a_wait_are_off_not_failing_when_the_ledger_cannot_be_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RCE_LEDGER_URL", "sqlite:////tmp/another.db")
    assert asyncio.run(_ledger.metrics_observer(MASKED)) is None
    monkeypatch.setenv("RCE_LEDGER_URL", REAL)
    observer = asyncio.run(_ledger.metrics_observer(MASKED))
    assert observer is not None
    assert any(url == REAL for _, url in downstream._recorders)
    ledger_conn._ledger_for.cache_clear()
