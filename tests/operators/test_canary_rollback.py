"""CanaryRollbackOperator acts only on a recorded gate decision that stops the wave."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from rce_lib.airflow_support import ledger_conn
from rce_lib.gate import record
from rce_lib.gate.evidence import Check, decide
from rce_lib.gate.stats import Verdict
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.rollback import CanaryRollbackOperator

NOW = datetime(2026, 11, 25, tzinfo=UTC)


class _Ti:
    try_number = 1


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", '{"conn_type": "http", "host": "127.0.0.1", "port": 9}')
    ledger_conn._ledger_for.cache_clear()
    ledger = Ledger(url)
    ledger.ensure_schema()
    return ledger


def operator() -> CanaryRollbackOperator:
    return CanaryRollbackOperator(
        task_id="canary_rollback", sddc_id="sddc-0001", target_version="1.26.0", rollout="r", wave="w"
    )


def context() -> Any:
    return {"run_id": "run-1", "ti": _Ti()}


def gate(ledger: Ledger, verdict: Verdict, hold: bool = False) -> None:
    check = Check(name="health", verdict=verdict, detail="x")
    record.record(ledger, "r", decide("w", "run-1", [check], now=NOW, hold=hold, bake_ends_at=None))


def test_no_gate_decision_leaves_the_canary_alone(ledger: Ledger) -> None:
    """A gate that crashed decided nothing: nothing is rolled back (clear the gate to judge again)."""
    ledger.upsert_progress("r", "w", "sddc-0001", "run-1", phase=Phase.DONE, status=Status.SUCCEEDED)
    with pytest.raises(AirflowSkipException, match="no decision that stops the wave"):
        operator().execute(context())
    gate(ledger, Verdict.INCONCLUSIVE, hold=True)  # a hold is not a decision either
    with pytest.raises(AirflowSkipException):
        operator().execute(context())
    gate(ledger, Verdict.PASS)
    with pytest.raises(AirflowSkipException):
        operator().execute(context())
    assert ledger.get("r", "w", "sddc-0001").status is Status.SUCCEEDED  # type: ignore[union-attr]


def test_an_sddc_its_group_already_rolled_back_is_not_touched_again(ledger: Ledger) -> None:
    ledger.upsert_progress("r", "w", "sddc-0001", "run-1", phase=Phase.ROLLBACK, status=Status.ROLLED_BACK)
    gate(ledger, Verdict.FAIL)
    assert operator().execute(context()) == "sddc-0001 was already rolled back"
