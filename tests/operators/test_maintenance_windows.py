"""Disruptive phases and maintenance windows, against the real simulator: a closed window
defers (MaintenanceWindowTrigger at the right opening) before any mutating call; an open
one proceeds; a phase already under way is never held; the flag off never waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from rce_lib.api.models import MaintenanceWindow
from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import EventKind, Phase, Status
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.components import VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.plan.windows import next_window
from rce_lib.triggers.maintenance_window import MaintenanceWindowTrigger
from tests.waiting import first_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET, SDDC = "r", "w", "manual__2026-11-25", "1.26.0", "sddc-0001"
QUICK = {"inline_wait_s": 10.0, "resume_delay_s": 0.0, "poll_min_s": 0.05, "poll_max_s": 0.2}


class Ti:
    try_number = 1


def _context() -> Any:
    return {"run_id": RUN, "ti": Ti()}


def closed_window(now: datetime) -> dict[str, int]:
    """A 4 h window that opens in about two days."""
    opens = now + timedelta(days=2)
    return {"day_of_week": opens.weekday(), "start_hour_utc": opens.hour, "duration_hours": 4}


def open_window(now: datetime) -> dict[str, int]:
    """A 6 h window that opened 1 to 2 hours ago: 4 h or more left."""
    opened = now - timedelta(hours=1)
    return {"day_of_week": opened.weekday(), "start_hour_utc": opened.hour, "duration_hours": 6}


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    server = sim_factory(size=2, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    assert server.sddc(SDDC)["version"] == "1.25.0"
    _enroll(ledger, R, W, SDDC, RUN, TARGET, "1.25.0")
    return server


def vcenter(**kwargs: Any) -> VcenterUpgradeOperator:
    kwargs.setdefault("respect_maintenance_windows", True)
    return VcenterUpgradeOperator(
        task_id="upgrade_vcenter",
        sddc_id=SDDC,
        target_version=TARGET,
        rollout=R,
        wave=W,
        **QUICK,
        **kwargs,
    )


def _phase_started(ledger: Ledger, phase: Phase) -> bool:
    events = ledger.events(rollout=R, wave=W, sddc_id=SDDC, kinds=[EventKind.PHASE_STARTED])
    return any(e.phase is phase for e in events)


def test_closed_window_defers_to_the_opening_without_any_mutating_call(fleet: Any, ledger: Ledger) -> None:
    window = closed_window(datetime.now(UTC))
    fleet.set_window(SDDC, window)
    fleet.reset_counters()
    with pytest.raises(TaskDeferred) as deferred:
        vcenter().execute(_context())
    now = datetime.now(UTC)

    opens, closes = next_window(MaintenanceWindow.model_validate(window), now)
    trigger = deferred.value.trigger
    assert isinstance(trigger, MaintenanceWindowTrigger)
    assert trigger.moment == opens and opens > now + timedelta(days=1)
    assert deferred.value.method_name == "resume_after_window"
    assert deferred.value.timeout is not None
    assert opens - now < deferred.value.timeout <= opens - now + timedelta(hours=1, seconds=5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "rce_lib.triggers.maintenance_window.MaintenanceWindowTrigger"
    assert MaintenanceWindowTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert kwargs["window"] == window and kwargs["sddc_id"] == SDDC

    counters = fleet.counters()
    assert counters["mutating_calls"] == 0 and sum(counters["tasks_created"].values()) == 0
    [event] = ledger.events(rollout=R, wave=W, sddc_id=SDDC, kinds=["waiting_for_window"])
    assert event.phase is Phase.UPGRADE_VCENTER
    assert event.data["opens_at"] == opens.isoformat() and event.data["closes_at"] == closes.isoformat()
    assert event.data["expected_source"] == "fallback" and event.data["expected_s"] == 3600
    assert opens.isoformat() in event.message
    assert not _phase_started(ledger, Phase.UPGRADE_VCENTER)  # the wait is not phase time


def test_resume_decides_again_with_the_window_the_customer_set_meanwhile(fleet: Any, ledger: Ledger) -> None:
    fleet.set_window(SDDC, closed_window(datetime.now(UTC)))
    op = vcenter()
    with pytest.raises(TaskDeferred):
        op.execute(_context())
    fleet.set_window(SDDC, open_window(datetime.now(UTC)))  # the customer moved it to now

    result = op.resume_after_window(_context(), {"status": "window_changed"})
    assert result.startswith("vcenter at ")
    assert fleet.sddc(SDDC)["components"]["vcenter"] == fleet.state()["releases"][-1]["components"]["vcenter"]
    assert fleet.counters()["tasks_created"] == {"UPGRADE_VCENTER": 1}
    assert _phase_started(ledger, Phase.UPGRADE_VCENTER)


def test_open_window_with_room_proceeds(fleet: Any, ledger: Ledger) -> None:
    fleet.set_window(SDDC, open_window(datetime.now(UTC)))
    assert vcenter().execute(_context()).startswith("vcenter at ")
    assert not ledger.events(rollout=R, wave=W, sddc_id=SDDC, kinds=["waiting_for_window"])


def test_flag_off_never_waits(fleet: Any, ledger: Ledger) -> None:
    fleet.set_window(SDDC, closed_window(datetime.now(UTC)))
    assert vcenter(respect_maintenance_windows=False).execute(_context()).startswith("vcenter at ")


def test_no_window_proceeds_by_default_and_is_refused_when_the_plan_says_so(
    fleet: Any, ledger: Ledger
) -> None:
    fleet.set_window(SDDC, None)
    fleet.reset_counters()
    with pytest.raises(AirflowFailException, match="NO_MAINTENANCE_WINDOW"):
        vcenter(missing_maintenance_window="refuse").execute(_context())
    assert fleet.counters()["mutating_calls"] == 0
    progress = ledger.get(R, W, SDDC)
    assert progress is not None and progress.last_error is not None
    assert progress.last_error.code == "NO_MAINTENANCE_WINDOW"
    assert vcenter().execute(_context()).startswith("vcenter at ")


def test_a_later_phase_that_never_fits_is_refused_before_anything_changes(fleet: Any, ledger: Ledger) -> None:
    """The window fits vCenter but never the hosts: refuse now, not with vCenter already upgraded."""
    fleet.set_window(SDDC, {**open_window(datetime.now(UTC)), "duration_hours": 2})
    fleet.reset_counters()
    op = vcenter(
        expected_phase_seconds={"upgrade_vcenter": 600, "upgrade_nsx": 600, "upgrade_hosts": 3 * 3600}
    )
    with pytest.raises(AirflowFailException, match=r"MAINTENANCE_WINDOW_TOO_SHORT.*upgrade_hosts"):
        op.execute(_context())
    assert fleet.counters()["mutating_calls"] == 0


def test_a_phase_already_under_way_is_not_held_by_a_closed_window(sim_factory: Any, fleet: Any) -> None:
    fleet.set_window(SDDC, closed_window(datetime.now(UTC)))
    started = fleet.request(  # someone (an earlier try whose record was lost) started it
        "POST",
        f"/api/v1/sddcs/{SDDC}/components/vcenter/upgrade",
        json={"target_version": TARGET},
        key="earlier-try",
    )
    assert started.status_code == 202, started.text
    assert vcenter().execute(_context()).startswith("vcenter at ")
    assert fleet.counters()["tasks_created"]["UPGRADE_VCENTER"] == 1  # adopted, not started again


def test_hosts_phase_stopped_between_hosts_continues_outside_the_window(fleet: Any, ledger: Ledger) -> None:
    release = fleet.state()["releases"][-1]["components"]
    snap = fleet.request("POST", f"/api/v1/sddcs/{SDDC}/snapshots", json={}, key="snap-1")
    assert snap.status_code == 202, snap.text
    ledger.set_snapshot(R, W, SDDC, RUN, fleet.wait_task(snap.json()["id"])["result"]["snapshot_id"])
    for component in ("vcenter", "nsx"):
        fleet.drift(kind="component_changed", sddc_id=SDDC, component=component, version=TARGET)
    hosts = sorted(h["id"] for h in fleet.sddc(SDDC)["hosts"])
    fleet.drift(kind="component_changed", sddc_id=SDDC, component="esx", version=TARGET, host_id=hosts[0])
    ledger.record_operation_task(  # this wave's own work on the first host
        R, W, SDDC, Phase.UPGRADE_HOSTS, host_id=f"{hosts[0]}/upgrade", generation=0,
        task_id="task-000001-000000", key="k", status="SUCCEEDED", run_id=RUN,
        kind=EventKind.TASK_STARTED, message="host_upgrade",
    )  # fmt: skip
    fleet.set_window(SDDC, closed_window(datetime.now(UTC)))
    op = HostsUpgradeOperator(
        task_id="upgrade_hosts", sddc_id=SDDC, target_version=TARGET, rollout=R, wave=W,
        respect_maintenance_windows=True, **QUICK,
    )  # fmt: skip
    assert op.execute(_context()).startswith(f"all {len(hosts)} hosts at {release['esx']}")


def test_the_trigger_fires_early_when_the_window_changes(fleet: Any) -> None:
    window = closed_window(datetime.now(UTC))
    fleet.set_window(SDDC, window)
    opens = next_window(MaintenanceWindow.model_validate(window), datetime.now(UTC))[0]
    trigger = MaintenanceWindowTrigger(opens_at=opens.isoformat(), sddc_id=SDDC, window=window, recheck_s=0.2)

    fleet.set_window(SDDC, open_window(datetime.now(UTC)))
    event = asyncio.run(first_event(trigger))
    assert event.payload["status"] == "window_changed"
    assert event.payload["window"] == open_window(datetime.now(UTC))


# ------------------------------------------------------------------ admission waits first


def precheck_op(**kwargs: Any) -> Any:
    from rce_lib.operators.precheck import PrecheckOperator

    kwargs.setdefault("respect_maintenance_windows", True)
    return PrecheckOperator(
        task_id="precheck",
        sddc_id=SDDC,
        rollout=R,
        wave=W,
        target_version=TARGET,
        max_parallel=1,
        **QUICK,
        **kwargs,
    )


def test_admission_waits_for_the_window_before_taking_a_slot(fleet: Any, ledger: Ledger) -> None:
    """A waiting SDDC holds no max_parallel slot (and, deferred, no service pool slot): SDDCs
    whose window is open are never held up by those waiting for theirs."""
    from rce_lib.operators.admission import ADMISSION_METHOD

    window = closed_window(datetime.now(UTC))
    fleet.set_window(SDDC, window)
    fleet.reset_counters()
    with pytest.raises(TaskDeferred) as deferred:
        precheck_op().execute(_context())
    opens, _ = next_window(MaintenanceWindow.model_validate(window), datetime.now(UTC))
    trigger = deferred.value.trigger
    assert isinstance(trigger, MaintenanceWindowTrigger) and trigger.moment == opens
    assert deferred.value.method_name == ADMISSION_METHOD and deferred.value.timeout is not None
    assert ledger.in_flight(R, W, RUN) == 0
    assert fleet.counters()["mutating_calls"] == 0
    [event] = ledger.events(rollout=R, wave=W, sddc_id=SDDC, kinds=["waiting_for_window"])
    assert event.data["by"] == "admission" and event.data["opens_at"] == opens.isoformat()

    # the window opens: the same task, resumed, takes its slot and prechecks
    fleet.set_window(SDDC, open_window(datetime.now(UTC)))
    precheck_op().resume_for_admission(_context(), event={"status": "window_open"})
    assert ledger.in_flight(R, W, RUN) == 1
    assert fleet.counters()["mutating_calls"] == 1


def test_admission_with_an_open_window_or_the_flag_off_takes_its_slot(fleet: Any, ledger: Ledger) -> None:
    fleet.set_window(SDDC, open_window(datetime.now(UTC)))
    fleet.reset_counters()
    precheck_op().execute(_context())
    assert ledger.in_flight(R, W, RUN) == 1
    # one read of the SDDC serves the window and the reconciliation before the phase
    requests = fleet.counters()["requests"]
    reads = [r["count"] for r in requests if (r["method"], r["route"]) == ("GET", "/api/v1/sddcs/{sddc_id}")]
    assert sum(reads) == 1, requests
    fleet.set_window(SDDC, closed_window(datetime.now(UTC)))
    ledger.upsert_progress(R, W, SDDC, RUN, status=Status.PENDING, started_at=None)
    precheck_op(respect_maintenance_windows=False).execute(_context())
    assert ledger.in_flight(R, W, RUN) == 1


def test_admission_does_not_hold_an_sddc_already_under_way(fleet: Any, ledger: Ledger) -> None:
    """A cleared precheck of an SDDC whose NSX upgrade began in this run: admitted again at once
    (its window is for the disruptive phases to judge), no wait recorded."""
    from rce_lib.operators.runtime import PhaseRun

    ledger.phase_started(R, W, SDDC, RUN, Phase.UPGRADE_NSX)
    fleet.set_window(SDDC, closed_window(datetime.now(UTC)))
    op = precheck_op()
    op.admit(PhaseRun.from_context(op, _context()))  # no TaskDeferred
    assert ledger.in_flight(R, W, RUN) == 1
    assert ledger.events(rollout=R, wave=W, sddc_id=SDDC, kinds=["waiting_for_window"]) == []
