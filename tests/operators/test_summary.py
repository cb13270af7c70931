"""WaveSummaryOperator: the run's verdict (promote or fail, with the reason), never for a dry run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rce_lib.gate import record
from rce_lib.gate.evidence import Check, decide
from rce_lib.gate.stats import Verdict
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import LastError, Phase, Status
from rce_lib.operators.summary import WaveSummaryOperator
from rce_lib.pacing.store import Pacer

NOW = datetime(2026, 11, 25, tzinfo=UTC)


class _Ti:
    def __init__(self, cohort: list[str] | None, canary: list[str] | None = None) -> None:
        self.xcoms: dict[str | None, Any] = {None: cohort, "canary": canary or [], "bulk": []}

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        assert task_ids == "resolve_cohort"
        return self.xcoms[key]


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    ledger = Ledger(url)
    ledger.ensure_schema()
    return ledger


def _context(cohort: list[str] | None, canary: list[str] | None = None) -> Any:
    return {"run_id": "run-1", "ti": _Ti(cohort, canary)}


def _summary(dry_run: bool | str = False, budget: float = 0.0) -> WaveSummaryOperator:
    return WaveSummaryOperator(
        task_id="wave_summary", rollout="r", wave="w", dry_run=dry_run, max_fail_percentage=budget
    )


def _done(ledger: Ledger, sddc_id: str) -> None:
    ledger.upsert_progress(
        "r", "w", sddc_id, "run-1", phase=Phase.DONE, status=Status.SUCCEEDED, finished_at=NOW
    )


def _rolled_back(ledger: Ledger, sddc_id: str) -> None:
    ledger.upsert_progress(
        "r", "w", sddc_id, "run-1", phase=Phase.ROLLBACK, status=Status.ROLLED_BACK, finished_at=NOW
    )


def _gate(ledger: Ledger, verdict: Verdict, *, hold: bool = False) -> None:
    check = Check(name="baseline_error_rate", verdict=verdict, detail="canary median 0.035 vs 0.005")
    record.record(ledger, "r", decide("w", "run-1", [check], now=NOW, hold=hold, bake_ends_at=None))


@pytest.mark.parametrize("rendered", [True, "True", "true"])
def test_dry_run_summary_is_skipped_so_the_wave_is_not_promoted(rendered: bool | str) -> None:
    with pytest.raises(AirflowSkipException):
        _summary(rendered).execute(_context([]))  # type: ignore[arg-type]


def test_failures_past_the_budget_fail_the_run(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    _rolled_back(ledger, "sddc-0002")
    with pytest.raises(
        AirflowFailException, match=r"ERROR_BUDGET_EXHAUSTED.*1 of 2 failed \(50%, budget 20%\)"
    ):
        _summary("False", budget=20).execute(_context(["sddc-0001", "sddc-0002"]))  # type: ignore[arg-type]


def test_failures_within_the_budget_promote_the_wave(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    _rolled_back(ledger, "sddc-0002")
    result = _summary("False", budget=50).execute(_context(["sddc-0001", "sddc-0002"]))  # type: ignore[arg-type]
    assert result["reason"] is None and result["verdict"].startswith("promoted")
    assert result["not_done"] == ["sddc-0002"]
    assert [e.kind for e in ledger.events(rollout="r", wave="w", kinds=["wave_summary"])] == ["wave_summary"]


def test_summary_passes_when_every_member_is_done(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    result = _summary("False").execute(_context(["sddc-0001"]))  # type: ignore[arg-type]
    assert result["total"] == 1 and result["by_status"] == {"succeeded": 1} and result["reason"] is None


def test_a_failed_gate_fails_the_run_with_its_reason(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    _gate(ledger, Verdict.FAIL)
    with pytest.raises(AirflowFailException, match=r"CANARY_GATE_FAILED.*baseline_error_rate"):
        _summary("False", budget=100).execute(_context(["sddc-0001"], canary=["sddc-0001"]))  # type: ignore[arg-type]


def test_a_gate_that_only_held_has_not_decided(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    _gate(ledger, Verdict.INCONCLUSIVE, hold=True)
    with pytest.raises(AirflowFailException, match=r"CANARY_GATE_FAILED.*did not decide"):
        _summary("False", budget=100).execute(_context(["sddc-0001"], canary=["sddc-0001"]))  # type: ignore[arg-type]


def test_kill_switch_holds_are_not_failures_but_fail_the_run(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    ledger.upsert_progress(
        "r",
        "w",
        "sddc-0002",
        "run-1",
        status=Status.FAILED,
        last_error=LastError(code="KILL_SWITCH", message="rce_kill_switch is set", retryable=False),
        finished_at=NOW,
    )
    with pytest.raises(AirflowFailException, match=r"KILL_SWITCH.*1 SDDC\(s\) held by the kill switch"):
        _summary("False", budget=100).execute(_context(["sddc-0001", "sddc-0002"]))  # type: ignore[arg-type]


def test_members_that_never_finished_fail_the_run(ledger: Ledger) -> None:
    _done(ledger, "sddc-0001")
    ledger.upsert_progress("r", "w", "sddc-0002", "run-1", phase=Phase.PRECHECK, status=Status.PENDING)
    with pytest.raises(AirflowFailException, match=r"WAVE_INCOMPLETE.*sddc-0002"):
        _summary("False", budget=100).execute(_context(["sddc-0001", "sddc-0002"]))  # type: ignore[arg-type]


def test_the_end_of_the_run_gives_back_its_pacing_slots(ledger: Ledger) -> None:
    """A phase that failed with its task still running kept its slot; nothing of this run will
    see that task end now, so the run's end frees it (other runs keep theirs)."""
    pacer = Pacer(ledger)
    pacer.acquire("nsx", "r/w/sddc-0001/nsx/-", "run-1")
    pacer.acquire("nsx", "r/w2/sddc-0009/nsx/-", "run-2")
    _done(ledger, "sddc-0001")
    _summary().execute(_context(["sddc-0001"]))  # type: ignore[arg-type]
    assert [(s.service, s.in_flight) for s in pacer.states()] == [("nsx", 1)]
