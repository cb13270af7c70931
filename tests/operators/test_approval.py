"""PromotionApprovalOperator: the human's answer is recorded in the ledger; Reject fails the run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support import ledger_conn
from rce_lib.ledger import Ledger
from rce_lib.operators.approval import APPROVED_EVENT, REJECTED_EVENT, PromotionApprovalOperator
from rce_lib.plan.model import Approval


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    ledger_conn._ledger_for.cache_clear()
    ledger = Ledger(url)
    ledger.ensure_schema()
    return ledger


def approval(on_timeout: str = "reject") -> PromotionApprovalOperator:
    plan = Approval.model_validate({"timeout_seconds": 900, "on_timeout": on_timeout})
    return PromotionApprovalOperator(task_id="approve_promotion", rollout="r", wave="w", approval=plan)


def answer(option: str) -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": datetime(2026, 11, 25, tzinfo=UTC),
        "responded_by_user": {"id": "7", "name": "oncall"},
    }


def test_the_plan_sets_timeout_and_default() -> None:
    assert approval().defaults == ["Reject"] and approval("approve").defaults == ["Approve"]
    assert approval().response_timeout is not None and approval().response_timeout.total_seconds() == 900
    assert approval().fail_on_reject


def test_approve_is_recorded(ledger: Ledger) -> None:
    result = approval().execute_complete({"run_id": "run-1"}, answer("Approve"))  # type: ignore[arg-type]
    assert result["chosen_options"] == ["Approve"]
    events = ledger.events(rollout="r", wave="w", run_id="run-1", kinds=[APPROVED_EVENT])
    assert len(events) == 1 and "oncall" in events[0].message


def test_reject_fails_with_its_reason_and_is_recorded(ledger: Ledger) -> None:
    with pytest.raises(AirflowFailException, match="PROMOTION_REJECTED"):
        approval().execute_complete({"run_id": "run-1"}, answer("Reject"))  # type: ignore[arg-type]
    assert len(ledger.events(rollout="r", wave="w", run_id="run-1", kinds=[REJECTED_EVENT])) == 1
