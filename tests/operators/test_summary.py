"""WaveSummaryOperator: the run's verdict, and no promotion for a dry run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.summary import WaveSummaryOperator


class _Ti:
    def __init__(self, cohort: list[str] | None) -> None:
        self.cohort = cohort

    def xcom_pull(self, task_ids: str) -> list[str] | None:
        assert task_ids == "resolve_cohort"
        return self.cohort


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    ledger = Ledger(url)
    ledger.ensure_schema()
    return ledger


def _context(cohort: list[str] | None) -> Any:
    return {"run_id": "run-1", "ti": _Ti(cohort)}


def _summary(dry_run: bool | str = False) -> WaveSummaryOperator:
    return WaveSummaryOperator(task_id="wave_summary", rollout="r", wave="w", dry_run=dry_run)


@pytest.mark.parametrize("rendered", [True, "True", "true"])
def test_dry_run_summary_is_skipped_so_the_wave_is_not_promoted(rendered: bool | str) -> None:
    with pytest.raises(AirflowSkipException):
        _summary(rendered).execute(_context([]))  # type: ignore[arg-type]


def test_summary_fails_the_run_when_a_member_did_not_reach_the_target(ledger: Ledger) -> None:
    ledger.upsert_progress("r", "w", "sddc-0001", "run-1", phase=Phase.DONE, status=Status.SUCCEEDED)
    ledger.upsert_progress("r", "w", "sddc-0002", "run-1", phase=Phase.ROLLBACK, status=Status.ROLLED_BACK)
    with pytest.raises(AirflowFailException, match=r"WAVE_INCOMPLETE.*sddc-0002"):
        _summary("False").execute(_context(["sddc-0001", "sddc-0002"]))  # type: ignore[arg-type]


def test_summary_passes_when_every_member_is_done(ledger: Ledger) -> None:
    ledger.upsert_progress("r", "w", "sddc-0001", "run-1", phase=Phase.DONE, status=Status.SUCCEEDED)
    result = _summary("False").execute(_context(["sddc-0001"]))  # type: ignore[arg-type]
    assert result == {"total": 1, "by_status": {"succeeded": 1}, "not_done": []}
    assert [e.kind for e in ledger.events(rollout="r", wave="w", kinds=["wave_summary"])] == ["wave_summary"]
