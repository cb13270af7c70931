"""The fleet sweep DAG `rce_reconcile`: its shape (parsed, no database), and end to end under
`airflow dags test` against the simulator: a run finds and repairs injected drift and lists
what needs a human, a second run finds nothing new. (A dry run is judged in
tests/reconcile/test_apply.py and tests/operators/test_reconcile_ops.py: each `airflow dags
test` costs 15-100 s on a busy machine.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import TriggerRule

from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.reconcile_dag import DEFAULT_SCHEDULE, SCHEDULE_ENV, reconcile_schedule

REPO = Path(__file__).resolve().parents[2]
ROLLOUT, WAVE, SOURCE, TARGET = "r-rec", "w1", "1.25.0", "1.26.0"
PLAN = f"""
rollout: {ROLLOUT}
release: {TARGET}
defaults:
  max_parallel: 2
  max_fail_percentage: 50
  gate: {{max_error_rate: 0.05, max_p95_latency_ms: 800}}
waves:
  - name: {WAVE}
    selector: {{sddc_ids: [sddc-0001]}}
    size: 1
"""


@pytest.fixture
def dag(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.delenv(SCHEDULE_ENV, raising=False)
    bag = DagBag(dag_folder=REPO / "dags" / "rce_reconcile.py")
    assert bag.import_errors == {}
    return bag.dags["rce_reconcile"]


def test_reconcile_dag_shape(dag: Any) -> None:
    assert dag.schedule == DEFAULT_SCHEDULE == "*/15 * * * *"
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.params.get_param("dry_run").value is False
    batch = dag.get_task("reconcile_batch")
    assert batch.pool == "rce_vcenter"  # the sweep's API calls are capped like every other task's
    assert batch.max_active_tis_per_dagrun == 4
    assert dag.get_task("list_batches").downstream_task_ids == {"reconcile_batch"}
    summary = dag.get_task("summary")
    assert summary.trigger_rule == TriggerRule.ALL_DONE


def test_reconcile_schedule_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEDULE_ENV, "5 * * * *")
    assert reconcile_schedule() == "5 * * * *"
    monkeypatch.setenv(SCHEDULE_ENV, "none")
    assert reconcile_schedule() is None
    monkeypatch.setenv(SCHEDULE_ENV, "")
    assert reconcile_schedule() == DEFAULT_SCHEDULE


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stdout or "") + "\n----- stderr -----\n" + (proc.stderr or "")
    return "\n".join(text.splitlines()[-60:])


def _summaries(ledger: Ledger) -> list[dict[str, Any]]:
    return [e.data for e in ledger.events(rollout="rce", wave="reconcile", kinds=["reconcile_summary"])]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_sweep_repairs_injected_drift_then_finds_nothing_new(sim_factory: Any, wave_airflow: Any) -> None:
    sim = sim_factory(size=6, time_scale=6000)
    af = wave_airflow(sim, PLAN)
    ledger = Ledger(f"sqlite:///{af.home / 'rce_ledger.db'}")
    # sddc-0001 upgraded by hand while its wave run was dead; its claim still held
    _enroll(ledger, "sddc-0001", claim=True)
    sim.drift(kind="sddc_upgraded", sddc_id="sddc-0001", version=TARGET)
    # sddc-0002: a host left in maintenance
    _enroll(ledger, "sddc-0002")
    host = sim.sddc("sddc-0002")["hosts"][0]["id"]
    sim.drift(kind="host_maintenance", sddc_id="sddc-0002", host_id=host)
    # sddc-0003: a host disconnected (a human must act)
    _enroll(ledger, "sddc-0003")
    sim.drift(kind="host_disconnected", sddc_id="sddc-0003", host_id=sim.sddc("sddc-0003")["hosts"][0]["id"])
    # sddc-0004: claimed by a run that no longer exists in Airflow, never enrolled
    assert ledger.claim("sddc-0004", ROLLOUT, WAVE, "manual__killed").granted
    # sddc-0005: a ledger row that no longer parses
    _enroll(ledger, "sddc-0005")
    with ledger_engine(ledger) as conn:
        conn.exec_driver_sql("UPDATE rce_progress SET phase = 'nonsense' WHERE sddc_id = 'sddc-0005'")
    real = af.dag_test("rce_reconcile")
    assert real.returncode == 0, _output(real)
    (summary,) = _summaries(ledger)
    assert summary["errors"] == [] and summary["dry_run"] is False and summary["sddcs"] == 5
    assert sorted((r["sddc_id"], r["drift"], r["outcome"]) for r in summary["repairs"]) == [
        ("sddc-0001", "sddc_changed_out_of_band", "repaired"),
        ("sddc-0001", "stale_claim", "repaired"),
        ("sddc-0002", "host_maintenance_idle", "repaired"),
        ("sddc-0004", "stale_claim", "repaired"),
    ]
    assert sorted((h["sddc_id"], h["drift"]) for h in summary["needs_human"]) == [
        ("sddc-0003", "host_disconnected"),
        ("sddc-0005", "ledger_row_corrupt"),
    ]
    progress = ledger.get(ROLLOUT, WAVE, "sddc-0001")
    assert progress is not None and (progress.phase, progress.status) == (Phase.DONE, Status.SUCCEEDED)
    assert ledger.active_claims() == {}
    assert sim.sddc("sddc-0002")["hosts"][0]["state"] == "CONNECTED"
    drifts = {(e.sddc_id, e.data["drift"]) for e in ledger.events(kinds=["drift_detected"])}
    assert ("sddc-0003", "host_disconnected") in drifts and ("sddc-0005", "ledger_row_corrupt") in drifts

    again = af.dag_test("rce_reconcile")
    assert again.returncode == 0, _output(again)
    last = _summaries(ledger)[-1]
    assert last["new"] == 0 and last["repairs"] == []
    assert sorted((h["sddc_id"], h["outcome"]) for h in last["needs_human"]) == [
        ("sddc-0003", "open"),
        ("sddc-0005", "open"),
    ]
    assert sim.counters()["duplicate_starts"]["count"] == 0


def _enroll(ledger: Ledger, sddc_id: str, *, claim: bool = False) -> None:
    if claim:
        assert ledger.claim(sddc_id, ROLLOUT, WAVE, "manual__dead").granted
    ledger.upsert_progress(
        ROLLOUT,
        WAVE,
        sddc_id,
        "manual__dead",
        event="enrolled",
        phase=Phase.PRECHECK,
        status=Status.PENDING,
        source_version=SOURCE,
        target_version=TARGET,
    )


class ledger_engine:
    """A raw connection to the ledger's database (to break a row the way a hand edit would)."""

    def __init__(self, ledger: Ledger) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(ledger.url)

    def __enter__(self) -> Any:
        self.conn = self.engine.connect()
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.commit()
        self.conn.close()
        self.engine.dispose()
