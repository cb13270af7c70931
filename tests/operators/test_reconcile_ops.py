"""The sweep operators outside a DAG run: rendered params, one SDDC's failure never stops
its batch, run states asked of Airflow, and the summary (simulator as a real process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger, dispose_engine
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.reconcile import ReconcileBatchOperator, ReconcileSummaryOperator, RunStates
from rce_lib.reconcile.drift import RunState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W = "r-ops", "w1"


class FakeTi:
    """What the operators ask of the task instance: run counts and XComs."""

    def __init__(self, running: set[str] | None = None, xcoms: dict[str, Any] | None = None) -> None:
        self.running = running or set()
        self.xcoms = xcoms or {}
        self.asked: list[tuple[str, list[str]]] = []

    def get_dr_count(self, dag_id: str, run_ids: list[str], states: list[str]) -> int:
        self.asked.append((dag_id, run_ids))
        if "broken" in run_ids:
            raise RuntimeError("execution API unreachable")
        return sum(1 for r in run_ids if r in self.running)

    def xcom_pull(self, task_ids: str, map_indexes: list[int] | None = None) -> Any:
        value = self.xcoms.get(task_ids)
        if map_indexes is None:
            return value
        return [value[i] if value and i < len(value) else None for i in map_indexes]


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    yield Ledger(url)
    dispose_engine(url)


def _enroll(ledger: Ledger, sddc_id: str) -> None:
    assert ledger.claim(sddc_id, R, W, "run-gone").granted
    ledger.upsert_progress(
        R,
        W,
        sddc_id,
        "run-gone",
        phase=Phase.PRECHECK,
        status=Status.PENDING,
        source_version="1.25.0",
        target_version="1.26.0",
    )


def test_run_states_ask_airflow_once_per_run_and_fall_back_to_unknown() -> None:
    ti = FakeTi(running={"run-a"})
    states = RunStates({"ti": ti})  # type: ignore[arg-type]
    assert states("w1", "run-a") is RunState.RUNNING
    assert states("w1", "run-a") is RunState.RUNNING
    assert states("w1", "run-b") is RunState.ENDED
    assert states("w1", "broken") is RunState.UNKNOWN
    assert ti.asked == [("rce_wave_w1", ["run-a"]), ("rce_wave_w1", ["run-b"]), ("rce_wave_w1", ["broken"])]


def test_batch_goes_on_past_an_sddc_it_cannot_read_and_honours_rendered_dry_run(
    sim_factory: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(size=4, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(sim.url, sim.token))
    for sddc_id in ("sddc-0001", "sddc-0002"):
        _enroll(ledger, sddc_id)
    sim.faults(forbidden_sddc_ids=["sddc-0001"])  # 403: not drift, an error of this SDDC only

    def run(dry_run: str) -> list[dict[str, Any]]:
        op = ReconcileBatchOperator(
            task_id="reconcile_batch", sddc_ids=["sddc-0001", "sddc-0002"], dry_run=dry_run
        )
        return op.execute({"run_id": "sweep-1", "ti": FakeTi()})  # type: ignore[arg-type]

    preview = run("True")  # what rendering "{{ params.dry_run }}" gives
    assert preview[0]["error"] and "403" in preview[0]["error"]
    assert [o["outcome"] for o in preview[1]["outcomes"]] == ["would_repair"]
    assert ledger.claim_of("sddc-0002") is not None

    reports = run("False")
    assert reports[0]["error"] and reports[0]["outcomes"] == []
    assert [(o["finding"]["kind"], o["outcome"]) for o in reports[1]["outcomes"]] == [
        ("stale_claim", "repaired")
    ]
    assert ledger.claim_of("sddc-0002") is None and ledger.claim_of("sddc-0001") is not None

    summary_op = ReconcileSummaryOperator(task_id="summary", dry_run="False")
    ti = FakeTi(xcoms={"list_batches": [["sddc-0001", "sddc-0002"]], "reconcile_batch": [reports]})
    summary = summary_op.execute({"run_id": "sweep-1", "ti": ti})  # type: ignore[arg-type]
    assert summary["errors"][0]["sddc_id"] == "sddc-0001" and summary["new"] == 1
    assert [e.data["new"] for e in ledger.events(rollout="rce", wave="reconcile")] == [1]


def test_summary_fails_the_run_when_a_batch_left_no_result(ledger: Ledger) -> None:
    ti = FakeTi(xcoms={"list_batches": [["sddc-0001"], ["sddc-0002"]], "reconcile_batch": [[]]})
    with pytest.raises(AirflowFailException, match="1 of 2 batch"):
        ReconcileSummaryOperator(task_id="summary").execute({"run_id": "sweep-1", "ti": ti})  # type: ignore[arg-type]
    assert len(ledger.events(rollout="rce", wave="reconcile", kinds=["reconcile_summary"])) == 1
