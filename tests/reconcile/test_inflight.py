"""In flight: a phase reconciles its SDDC before acting, with the sweep's rules (against the
simulator as a real process). The phase is the watcher, so its own progress is not drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _world import ROLLOUT, TARGET, WAVE, enroll
from sqlalchemy import create_engine, text

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.errors import Reason
from rce_lib.hooks.sddc_api import SddcApiHook
from rce_lib.ledger import Ledger, dispose_engine
from rce_lib.ledger.models import Phase, Status
from rce_lib.reconcile.inflight import PhaseAction, PhaseDecision, reconcile_before_phase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def sim(module_sim_factory: Any) -> Any:
    return module_sim_factory(size=8, time_scale=6000)


@pytest.fixture
def hook(sim: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SddcApiHook]:
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(sim.url, sim.token))
    hook = SddcApiHook(sleep=lambda _s: None)
    yield hook
    hook.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path}/ledger.db"
    yield Ledger(url)
    dispose_engine(url)


def before(ledger: Ledger, hook: SddcApiHook, sddc_id: str, phase: Phase) -> PhaseDecision:
    return reconcile_before_phase(
        ledger,
        hook,
        rollout=ROLLOUT,
        wave=WAVE,
        sddc_id=sddc_id,
        phase=phase,
        run_id="run-live",
        target_version=TARGET,
    )


def drift_events(ledger: Ledger, sddc_id: str) -> list[tuple[str, str, str]]:
    return [
        (str(e.data["drift"]), str(e.data["outcome"]), str(e.data["by"]))
        for e in ledger.events(sddc_id=sddc_id, kinds=["drift_detected"])
    ]


def test_consistent_sddc_proceeds_and_records_nothing(hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0001", run_id="run-live")
    decision = before(ledger, hook, "sddc-0001", Phase.PRECHECK)
    assert (decision.action, decision.findings) == (PhaseAction.PROCEED, ())
    assert drift_events(ledger, "sddc-0001") == []


def test_component_already_upgraded_is_adopted_and_the_phase_proceeds(
    sim: Any, hook: SddcApiHook, ledger: Ledger
) -> None:
    enroll(
        ledger, "sddc-0002", phase=Phase.SNAPSHOT, status=Status.SUCCEEDED, snapshot_id="s", run_id="run-live"
    )
    sim.drift(kind="component_changed", sddc_id="sddc-0002", component="vcenter", version=TARGET)

    decision = before(ledger, hook, "sddc-0002", Phase.UPGRADE_VCENTER)

    assert decision.action is PhaseAction.ADOPT
    assert [f.kind.value for f in decision.findings] == ["components_partly_upgraded"]
    progress = ledger.get(ROLLOUT, WAVE, "sddc-0002")
    assert progress is not None and progress.phase is Phase.SNAPSHOT  # the phase itself moves the ledger
    assert drift_events(ledger, "sddc-0002") == [
        ("components_partly_upgraded", "repaired", "phase:upgrade_vcenter")
    ]


def test_disconnected_host_stops_the_phase_for_a_human(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0003", phase=Phase.PRECHECK, status=Status.PENDING, run_id="run-live")
    sim.drift(kind="host_disconnected", sddc_id="sddc-0003", host_id=sim.sddc("sddc-0003")["hosts"][0]["id"])

    decision = before(ledger, hook, "sddc-0003", Phase.PRECHECK)

    assert (decision.action, decision.reason) == (PhaseAction.STOP, Reason.HOST_DISCONNECTED)
    assert "[host_disconnected]" in decision.message
    assert drift_events(ledger, "sddc-0003") == [("host_disconnected", "flagged", "phase:precheck")]
    # a retry of the phase stops again, without a second event
    assert before(ledger, hook, "sddc-0003", Phase.PRECHECK).action is PhaseAction.STOP
    assert len(drift_events(ledger, "sddc-0003")) == 1


def test_removed_sddc_stops_the_phase(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0004", run_id="run-live")
    sim.drift(kind="sddc_removed", sddc_id="sddc-0004")
    decision = before(ledger, hook, "sddc-0004", Phase.PRECHECK)
    assert (decision.action, decision.reason) == (PhaseAction.STOP, Reason.SDDC_REMOVED)


def test_host_in_maintenance_is_the_hosts_phase_business_and_repaired_elsewhere(
    sim: Any, hook: SddcApiHook, ledger: Ledger
) -> None:
    enroll(ledger, "sddc-0005", run_id="run-live")
    host_id = sim.sddc("sddc-0005")["hosts"][0]["id"]
    sim.drift(kind="host_maintenance", sddc_id="sddc-0005", host_id=host_id)
    sim.drift(kind="component_changed", sddc_id="sddc-0005", component="vcenter", version=TARGET)
    sim.drift(kind="component_changed", sddc_id="sddc-0005", component="nsx", version=TARGET)
    ledger.upsert_progress(
        ROLLOUT,
        WAVE,
        "sddc-0005",
        "run-live",
        phase=Phase.UPGRADE_NSX,
        status=Status.SUCCEEDED,
        snapshot_id="s",
    )
    assert before(ledger, hook, "sddc-0005", Phase.UPGRADE_HOSTS).action is PhaseAction.PROCEED
    assert sim.sddc("sddc-0005")["hosts"][0]["state"] == "MAINTENANCE"  # left to the hosts phase

    decision = before(ledger, hook, "sddc-0005", Phase.POSTCHECK)
    assert decision.action is PhaseAction.ADOPT
    assert [f.kind.value for f in decision.findings] == ["host_maintenance_idle"]
    assert sim.sddc("sddc-0005")["hosts"][0]["state"] == "CONNECTED"


def test_corrupt_ledger_row_stops_the_phase(hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0006", run_id="run-live")
    engine = create_engine(ledger.url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE rce_progress SET task_ids = '{not json' WHERE sddc_id = 'sddc-0006'"))
    engine.dispose()
    decision = before(ledger, hook, "sddc-0006", Phase.PRECHECK)
    assert (decision.action, decision.reason) == (PhaseAction.STOP, Reason.CONTRACT_VIOLATION)
    assert [f.kind.value for f in decision.findings] == ["ledger_row_corrupt"]
