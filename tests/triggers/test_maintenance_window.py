"""MaintenanceWindowTrigger: fires at the opening; a failed re-read never stops the wait."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rce_lib.triggers.maintenance_window import MaintenanceWindowTrigger
from tests.waiting import first_event

WINDOW = {"day_of_week": 5, "start_hour_utc": 2, "duration_hours": 6}


def _trigger(opens_at: datetime, **kwargs: Any) -> MaintenanceWindowTrigger:
    return MaintenanceWindowTrigger(
        opens_at=opens_at.isoformat(), sddc_id="sddc-0001", window=WINDOW, **kwargs
    )


async def _first(trigger: MaintenanceWindowTrigger, timeout: float = 10) -> dict[str, Any]:
    event = await first_event(trigger, timeout)
    return dict(event.payload)


def test_serialize_round_trips_exactly() -> None:
    trigger = _trigger(datetime(2026, 11, 28, 2, tzinfo=UTC), recheck_s=60.0, log_fields={"wave": "w"})
    classpath, kwargs = trigger.serialize()
    assert classpath == "rce_lib.triggers.maintenance_window.MaintenanceWindowTrigger"
    assert MaintenanceWindowTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["opens_at"] == "2026-11-28T02:00:00+00:00"


def test_fires_when_the_window_opens() -> None:
    opens = datetime.now(UTC) + timedelta(seconds=0.3)
    payload = asyncio.run(_first(_trigger(opens, recheck_s=0)))
    assert payload == {"status": "window_open", "opens_at": opens.isoformat(), "window": WINDOW}
    assert datetime.now(UTC) >= opens


def test_an_unreadable_api_keeps_it_waiting_for_the_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", '{"conn_type": "http", "host": "127.0.0.1", "port": 9}')
    opens = datetime.now(UTC) + timedelta(seconds=1.5)
    payload = asyncio.run(_first(_trigger(opens, recheck_s=0.2), timeout=60))
    assert payload["status"] == "window_open"
