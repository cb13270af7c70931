"""Admission, done by each SDDC's first phase (the precheck) against the real simulator: it takes
an in-flight slot or defers on the ledger (holding no pool slot), and applies the wave's brakes
before it touches the SDDC."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred
from airflow.triggers.base import TaskSuccessEvent

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.admission import ADMISSION_METHOD
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger
from rce_lib.triggers.phase import RESUME_METHOD, PhaseTrigger
from tests.waiting import first_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET = "r", "w", "manual__2026-11-27", "1.26.0"
IDS = ("sddc-0001", "sddc-0002", "sddc-0003")
QUICK = {"inline_wait_s": 10.0, "resume_delay_s": 0.0, "poll_min_s": 0.05, "poll_max_s": 0.2}


class Ti:
    try_number = 1


def _context() -> Any:
    return {"run_id": RUN, "ti": Ti()}


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    server = sim_factory(size=3, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    for sddc_id in IDS:
        _enroll(ledger, R, W, sddc_id, RUN, TARGET, server.sddc(sddc_id)["version"])
    return server


def precheck(sddc_id: str, max_parallel: int | str | None = 2, **kwargs: Any) -> PrecheckOperator:
    return PrecheckOperator(
        task_id="precheck",
        sddc_id=sddc_id,
        rollout=R,
        wave=W,
        target_version=TARGET,
        max_parallel=max_parallel,
        admission_poll_s=0.05,
        **{**QUICK, **kwargs},
    )


def _prechecks_started(fleet: Any) -> int:
    return int(fleet.counters()["mutating_calls"])


def test_admits_up_to_max_parallel_then_defers_on_the_ledger_before_any_call(
    fleet: Any, ledger: Ledger, worker_resumes: None
) -> None:
    assert "precheck" in str(precheck(IDS[0]).execute(_context()))
    assert "precheck" in str(precheck(IDS[1]).execute(_context()))
    fleet.reset_counters()
    with pytest.raises(TaskDeferred) as deferred:
        precheck(IDS[2]).execute(_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, LedgerSlotTrigger)
    assert (trigger.limit, trigger.run_id, trigger.ledger_url) == (2, RUN, ledger.url)
    assert deferred.value.method_name == ADMISSION_METHOD
    assert deferred.value.timeout is None
    assert ledger.in_flight(R, W, RUN) == 2
    assert fleet.counters()["requests_total"] == 1  # this counters read only: nothing asked of the fleet
    admitted = ledger.events(rollout=R, wave=W, kinds=["admitted"])
    assert sorted(e.sddc_id for e in admitted) == list(IDS[:2])


def test_a_precheck_waiting_for_admission_goes_on_in_the_triggerer_once_a_slot_frees(
    fleet: Any, ledger: Ledger
) -> None:
    """The wait is a PhaseTrigger (no worker, no pool slot): when the first SDDC ends, the third
    is admitted there and its precheck runs to the end there."""
    for sddc_id in IDS[:2]:
        precheck(sddc_id).execute(_context())
    with pytest.raises(TaskDeferred) as deferred:
        precheck(IDS[2]).execute(_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, PhaseTrigger) and deferred.value.method_name == RESUME_METHOD
    assert trigger.method == ADMISSION_METHOD and trigger.wait is not None
    assert trigger.wait[0].endswith("LedgerSlotTrigger")

    async def admitted_after_release() -> Any:
        waiting = asyncio.ensure_future(first_event(trigger, 30))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # no slot: not admitted, nothing started
        ledger.upsert_progress(R, W, IDS[0], RUN, status=Status.SUCCEEDED, finished_at=datetime.now(UTC))
        return await waiting

    fleet.reset_counters()
    event = asyncio.run(admitted_after_release())
    assert isinstance(event, TaskSuccessEvent), event
    assert _prechecks_started(fleet) == 1
    assert {e.sddc_id for e in ledger.events(rollout=R, wave=W, kinds=["admitted"])} == set(IDS)


def test_the_kill_switch_set_while_waiting_fails_on_the_worker_with_its_reason(
    fleet: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sddc_id in IDS[:2]:
        precheck(sddc_id).execute(_context())
    with pytest.raises(TaskDeferred) as deferred:
        precheck(IDS[2]).execute(_context())
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W", "INC-7 stop")
    ledger.upsert_progress(R, W, IDS[0], RUN, status=Status.SUCCEEDED, finished_at=datetime.now(UTC))
    fleet.reset_counters()
    event = asyncio.run(first_event(deferred.value.trigger, 30))
    assert event.payload["status"] == "raised" and event.payload["kind"] == "fail"
    assert event.payload["reason"] == "KILL_SWITCH"
    with pytest.raises(AirflowFailException, match=r"^\[KILL_SWITCH\] sddc-0003 not started"):
        precheck(IDS[2]).resume_from_triggerer(_context(), event=event.payload)
    assert _prechecks_started(fleet) == 0
    assert ledger.in_flight(R, W, RUN) == 1  # the one left: no slot taken for the stopped SDDC


def test_no_limit_takes_no_slot(fleet: Any, ledger: Ledger) -> None:
    precheck(IDS[0], max_parallel="None").execute(_context())
    assert ledger.events(rollout=R, wave=W, kinds=["admitted"]) == []


def test_refuses_a_malformed_sddc_id(ledger: Ledger) -> None:
    with pytest.raises(AirflowFailException, match="INVALID_IDENTIFIER"):
        precheck("../etc").execute(_context())
    assert ledger.in_flight(R, W, RUN) == 0


def test_error_budget_spent_skips_new_sddcs_with_a_reason(fleet: Any, ledger: Ledger) -> None:
    now = datetime.now(UTC)
    for sddc_id in ("sddc-0008", "sddc-0009"):
        ledger.upsert_progress(R, W, sddc_id, RUN, status=Status.ROLLED_BACK, finished_at=now)

    def gated(sddc_id: str, budget: float) -> PrecheckOperator:
        return precheck(sddc_id, max_parallel=4, max_fail_percentage=budget, cohort_size="4")

    gated(IDS[0], 50).execute(_context())
    fleet.reset_counters()
    with pytest.raises(AirflowSkipException, match=r"ERROR_BUDGET_EXHAUSTED.*2 of 4"):
        gated(IDS[1], 25).execute(_context())
    assert fleet.counters()["requests_total"] == 1  # nothing asked of the fleet
    row = ledger.get(R, W, IDS[1])
    assert row is not None and row.status is Status.SKIPPED and row.started_at is None
    assert row.last_error is not None and row.last_error.code == "ERROR_BUDGET_EXHAUSTED"
    # an SDDC already under way in this run (a retry, a cleared task) is let through to finish
    ledger.phase_started(R, W, IDS[2], RUN, Phase.PRECHECK)
    gated(IDS[2], 25).execute(_context())
    assert ledger.in_flight(R, W, RUN) == 2


def test_kill_switch_fails_before_admission_and_records_why(
    fleet: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W", "INC-7 stop")
    with pytest.raises(AirflowFailException, match=r"KILL_SWITCH.*rce_kill_switch_w is set \(INC-7 stop\)"):
        precheck(IDS[0]).execute(_context())
    row = ledger.get(R, W, IDS[0])
    assert row is not None and row.last_error is not None and row.last_error.code == "KILL_SWITCH"
    assert ledger.in_flight(R, W, RUN) == 0
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W", "off")  # "off" counts as unset
    precheck(IDS[0]).execute(_context())
    assert ledger.in_flight(R, W, RUN) == 1
