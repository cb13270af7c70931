"""AdmitOperator: takes an in-flight slot, or defers on the ledger without a service pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from rce_lib.airflow_support import ledger_conn
from rce_lib.ledger import Ledger
from rce_lib.operators.admission import AdmitOperator
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    url = f"sqlite:///{tmp_path}/rce_ledger.db"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    ledger_conn._ledger_for.cache_clear()
    return Ledger(url)


def admit(sddc_id: str, max_parallel: int | str | None = 2) -> AdmitOperator:
    return AdmitOperator(task_id="admit", sddc_id=sddc_id, rollout="r", wave="w", max_parallel=max_parallel)


def test_admits_up_to_max_parallel_then_defers_on_the_ledger(ledger: Ledger) -> None:
    context = {"run_id": "run-1"}
    assert admit("sddc-1").execute(context).startswith("admitted")  # type: ignore[arg-type]
    assert admit("sddc-2").execute(context).startswith("admitted")  # type: ignore[arg-type]
    with pytest.raises(TaskDeferred) as deferred:
        admit("sddc-3").execute(context)  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, LedgerSlotTrigger)
    assert (trigger.limit, trigger.run_id, trigger.ledger_url) == (2, "run-1", ledger.url)
    assert deferred.value.method_name == "run_from_start"
    assert ledger.in_flight("r", "w", "run-1") == 2


def test_no_limit_admits_without_touching_the_ledger(ledger: Ledger) -> None:
    assert admit("sddc-1", max_parallel="None").execute({"run_id": "run-1"}) == "no in-flight limit"  # type: ignore[arg-type]
    assert ledger.in_flight("r", "w", "run-1") == 0


def test_refuses_a_malformed_sddc_id(ledger: Ledger) -> None:
    with pytest.raises(AirflowFailException, match="INVALID_IDENTIFIER"):
        admit("../etc").execute({"run_id": "run-1"})  # type: ignore[arg-type]


def test_admission_task_uses_no_service_pool() -> None:
    assert admit("sddc-1").pool == "default_pool"


def test_error_budget_spent_skips_new_sddcs_with_a_reason(ledger: Ledger) -> None:
    from datetime import UTC, datetime

    from airflow.sdk.exceptions import AirflowSkipException

    from rce_lib.ledger.models import Status

    now = datetime.now(UTC)
    for sddc_id in ("sddc-1", "sddc-2"):
        ledger.upsert_progress("r", "w", sddc_id, "run-1", status=Status.ROLLED_BACK, finished_at=now)

    def gated(sddc_id: str, budget: float) -> AdmitOperator:
        return AdmitOperator(
            task_id="admit",
            sddc_id=sddc_id,
            rollout="r",
            wave="w",
            max_parallel=4,
            max_fail_percentage=budget,
            cohort_size="4",
        )

    assert gated("sddc-3", 50).execute({"run_id": "run-1"}).startswith("admitted")  # type: ignore[arg-type]
    with pytest.raises(AirflowSkipException, match=r"ERROR_BUDGET_EXHAUSTED.*2 of 4"):
        gated("sddc-4", 25).execute({"run_id": "run-1"})  # type: ignore[arg-type]
    row = ledger.get("r", "w", "sddc-4")
    assert row is not None and row.status is Status.SKIPPED
    assert row.last_error is not None and row.last_error.code == "ERROR_BUDGET_EXHAUSTED"
    # an SDDC already under way in this run (a retry, a cleared task) is let through to finish
    from rce_lib.ledger.models import Phase

    ledger.phase_started("r", "w", "sddc-3", "run-1", Phase.PRECHECK)
    assert gated("sddc-3", 25).execute({"run_id": "run-1"}).startswith("admitted")  # type: ignore[arg-type]


def test_kill_switch_fails_admission_and_records_why(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W", "INC-7 stop")
    with pytest.raises(AirflowFailException, match=r"KILL_SWITCH.*rce_kill_switch_w is set \(INC-7 stop\)"):
        admit("sddc-1").execute({"run_id": "run-1"})  # type: ignore[arg-type]
    row = ledger.get("r", "w", "sddc-1")
    assert row is not None and row.last_error is not None and row.last_error.code == "KILL_SWITCH"
    assert ledger.in_flight("r", "w", "run-1") == 0
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W", "off")  # "off" counts as unset
    assert admit("sddc-1").execute({"run_id": "run-1"}).startswith("admitted")  # type: ignore[arg-type]
