"""Every drift kind against the simulator's drift injection (a real process): detected,
repaired or flagged as the rules say, a ledger event with the kind's name, and a
second sweep that finds nothing new."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _world import ROLLOUT, SOURCE, TARGET, WAVE, enroll
from sqlalchemy import create_engine, text

from rce_lib.api.keys import KeyParts, idempotency_key
from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.hooks.sddc_api import SddcApiHook
from rce_lib.ledger import Ledger, dispose_engine
from rce_lib.ledger.models import Phase, Status
from rce_lib.reconcile.apply import Reconciler, SddcReport
from rce_lib.reconcile.drift import RunState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LONG = (
    6_000_000.0  # simulated seconds: UPGRADE_VCENTER runs ~1000 s of real time, so it can be failed or purged
)


@pytest.fixture(scope="module")
def sim(module_sim_factory: Any) -> Any:
    return module_sim_factory(size=16, time_scale=6000, config={"durations_s": {"UPGRADE_VCENTER": LONG}})


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


def ended(_wave: str, _run_id: str) -> RunState:
    return RunState.ENDED


def sweep(ledger: Ledger, hook: SddcApiHook, sddc_id: str, *, dry_run: bool = False) -> SddcReport:
    return Reconciler(ledger, hook, by="sweep", run_id="sweep-1", dry_run=dry_run).sweep_sddc(sddc_id, ended)


def outcomes(report: SddcReport) -> list[tuple[str, str, str]]:
    return [(o.finding.kind.value, o.finding.repair.value, o.outcome) for o in report.outcomes]


def new(report: SddcReport) -> list[tuple[str, str, str]]:
    return [(o.finding.kind.value, o.finding.repair.value, o.outcome) for o in report.outcomes if o.new]


def drift_events(ledger: Ledger, sddc_id: str) -> list[tuple[str, str]]:
    return [
        (str(e.data["drift"]), str(e.data["outcome"]))
        for e in ledger.events(sddc_id=sddc_id, kinds=["drift_detected"])
    ]


def first_host(sim: Any, sddc_id: str) -> str:
    return str(sim.sddc(sddc_id)["hosts"][0]["id"])


def start_task(hook: SddcApiHook, sddc_id: str, op: str) -> Any:
    key = idempotency_key(
        KeyParts(rollout=ROLLOUT, wave=WAVE, sddc_id=sddc_id, phase=op, target_version=TARGET)
    )
    if op == "precheck":
        return hook.start_precheck(sddc_id, TARGET, key=key).task
    if op == "snapshot":
        return hook.start_snapshot(sddc_id, key=key).task
    return hook.start_component_upgrade(sddc_id, "vcenter", TARGET, key=key).task


def record_running(ledger: Ledger, sddc_id: str, phase: Phase, task_id: str, status: str = "RUNNING") -> None:
    ledger.record_operation_task(
        ROLLOUT,
        WAVE,
        sddc_id,
        phase,
        generation=0,
        task_id=task_id,
        key=None,
        status=status,
        run_id="run-dead",
    )


# ------------------------------------------------------------------ real state out of band


def test_sddc_upgraded_out_of_band_is_adopted_as_done(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0001")
    sim.drift(kind="sddc_upgraded", sddc_id="sddc-0001", version=TARGET)

    report = sweep(ledger, hook, "sddc-0001")

    assert sorted(outcomes(report)) == [
        ("sddc_changed_out_of_band", "adopt_state", "repaired"),
        ("stale_claim", "release_claim", "repaired"),
    ]
    progress = ledger.get(ROLLOUT, WAVE, "sddc-0001")
    assert progress is not None and (progress.phase, progress.status) == (Phase.DONE, Status.SUCCEEDED)
    assert progress.finished_at is not None and progress.run_id == "run-dead"  # ownership kept
    assert ledger.claim_of("sddc-0001") is None
    assert ("sddc_changed_out_of_band", "repaired") in drift_events(ledger, "sddc-0001")
    assert outcomes(sweep(ledger, hook, "sddc-0001")) == []


def test_components_ahead_of_the_ledger_are_adopted(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(
        ledger, "sddc-0002", phase=Phase.SNAPSHOT, status=Status.SUCCEEDED, snapshot_id="snap-x", claim=False
    )
    sim.drift(kind="component_changed", sddc_id="sddc-0002", component="vcenter", version=TARGET)

    report = sweep(ledger, hook, "sddc-0002")

    assert outcomes(report) == [("components_partly_upgraded", "adopt_state", "repaired")]
    progress = ledger.get(ROLLOUT, WAVE, "sddc-0002")
    assert progress is not None
    assert (progress.phase, progress.status) == (Phase.UPGRADE_VCENTER, Status.SUCCEEDED)
    assert drift_events(ledger, "sddc-0002") == [("components_partly_upgraded", "repaired")]
    assert outcomes(sweep(ledger, hook, "sddc-0002")) == []


def test_a_mix_the_engine_cannot_leave_is_flagged_once_and_resolved_when_gone(
    sim: Any, hook: SddcApiHook, ledger: Ledger
) -> None:
    enroll(
        ledger, "sddc-0003", phase=Phase.SNAPSHOT, status=Status.SUCCEEDED, snapshot_id="snap-x", claim=False
    )
    sim.drift(kind="component_changed", sddc_id="sddc-0003", component="nsx", version="4.9.9-hotfix")

    first = sweep(ledger, hook, "sddc-0003")
    assert outcomes(first) == [("components_partly_upgraded", "needs_human", "flagged")]
    second = sweep(ledger, hook, "sddc-0003")
    assert outcomes(second) == [("components_partly_upgraded", "needs_human", "open")]
    assert new(second) == []
    assert drift_events(ledger, "sddc-0003") == [("components_partly_upgraded", "flagged")]  # recorded once

    sim.drift(kind="component_changed", sddc_id="sddc-0003", component="nsx", version=SOURCE)
    third = sweep(ledger, hook, "sddc-0003")
    assert outcomes(third) == [] and len(third.resolved) == 1
    resolved = ledger.events(sddc_id="sddc-0003", kinds=["drift_resolved"])
    assert [e.data["drift"] for e in resolved] == ["components_partly_upgraded"]


def test_host_left_in_maintenance_exits(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0004", phase=Phase.PRECHECK, status=Status.FAILED, claim=False, started=True)
    host_id = first_host(sim, "sddc-0004")
    sim.drift(kind="host_maintenance", sddc_id="sddc-0004", host_id=host_id)

    report = sweep(ledger, hook, "sddc-0004")

    assert outcomes(report) == [("host_maintenance_idle", "exit_maintenance", "repaired")]
    host = next(h for h in sim.sddc("sddc-0004")["hosts"] if h["id"] == host_id)
    assert host["state"] == "CONNECTED"
    op = ledger.get_operation(ROLLOUT, WAVE, "sddc-0004", Phase.UPGRADE_HOSTS, host_id=f"{host_id}/exit")
    assert op is not None and op.status == "SUCCEEDED" and op.idempotency_key  # the hosts phase's own slot
    assert drift_events(ledger, "sddc-0004") == [("host_maintenance_idle", "repaired")]
    assert outcomes(sweep(ledger, hook, "sddc-0004")) == []
    # in maintenance again later: repaired again, under a new generation (a replayed key would do nothing)
    sim.drift(kind="host_maintenance", sddc_id="sddc-0004", host_id=host_id)
    assert outcomes(sweep(ledger, hook, "sddc-0004")) == [
        ("host_maintenance_idle", "exit_maintenance", "repaired")
    ]
    op = ledger.get_operation(ROLLOUT, WAVE, "sddc-0004", Phase.UPGRADE_HOSTS, host_id=f"{host_id}/exit")
    assert op is not None and op.generation == 1
    assert next(h for h in sim.sddc("sddc-0004")["hosts"] if h["id"] == host_id)["state"] == "CONNECTED"
    assert sim.counters()["duplicate_starts"]["count"] == 0


def test_disconnected_host_is_flagged_for_a_human(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0005", claim=False)
    host_id = first_host(sim, "sddc-0005")
    sim.drift(kind="host_disconnected", sddc_id="sddc-0005", host_id=host_id)

    assert outcomes(sweep(ledger, hook, "sddc-0005")) == [("host_disconnected", "needs_human", "flagged")]
    assert new(sweep(ledger, hook, "sddc-0005")) == []
    assert drift_events(ledger, "sddc-0005") == [("host_disconnected", "flagged")]
    sim.drift(kind="host_reconnected", sddc_id="sddc-0005", host_id=host_id)
    assert sweep(ledger, hook, "sddc-0005").resolved == [
        f"host_disconnected:{ROLLOUT}/{WAVE}/sddc-0005:host {host_id}"
    ]


def test_removed_sddc_is_flagged_for_a_human(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(
        ledger, "sddc-0006", phase=Phase.UPGRADE_VCENTER, status=Status.RUNNING, snapshot_id="s", claim=False
    )
    sim.drift(kind="sddc_removed", sddc_id="sddc-0006")

    assert outcomes(sweep(ledger, hook, "sddc-0006")) == [("sddc_removed", "needs_human", "flagged")]
    assert new(sweep(ledger, hook, "sddc-0006")) == []
    assert drift_events(ledger, "sddc-0006") == [("sddc_removed", "flagged")]


# ------------------------------------------------------------------ downstream tasks nobody watched


def test_task_that_succeeded_unwatched_is_reattached(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0007", phase=Phase.PRECHECK, status=Status.RUNNING, claim=False, started=True)
    task = start_task(hook, "sddc-0007", "precheck")
    record_running(ledger, "sddc-0007", Phase.PRECHECK, task.id, task.status.value)
    sim.wait_task(task.id)

    report = sweep(ledger, hook, "sddc-0007")

    assert outcomes(report) == [("task_succeeded_unrecorded", "reattach_task", "repaired")]
    op = ledger.get_operation(ROLLOUT, WAVE, "sddc-0007", Phase.PRECHECK)
    assert op is not None and (op.task_id, op.status, op.generation) == (task.id, "SUCCEEDED", 0)
    assert drift_events(ledger, "sddc-0007") == [("task_succeeded_unrecorded", "repaired")]
    assert outcomes(sweep(ledger, hook, "sddc-0007")) == []


def test_task_failed_out_of_band_is_recorded(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(
        ledger, "sddc-0008", phase=Phase.UPGRADE_VCENTER, status=Status.RUNNING, snapshot_id="s", claim=False
    )
    task = start_task(hook, "sddc-0008", "vcenter")
    record_running(ledger, "sddc-0008", Phase.UPGRADE_VCENTER, task.id)
    assert outcomes(sweep(ledger, hook, "sddc-0008")) == []  # still running: no drift
    sim.drift(kind="task_failed", task_id=task.id)

    report = sweep(ledger, hook, "sddc-0008")

    assert outcomes(report) == [("task_failed_unrecorded", "reattach_task", "repaired")]
    op = ledger.get_operation(ROLLOUT, WAVE, "sddc-0008", Phase.UPGRADE_VCENTER)
    assert op is not None and op.status == "FAILED"
    assert drift_events(ledger, "sddc-0008") == [("task_failed_unrecorded", "repaired")]
    assert outcomes(sweep(ledger, hook, "sddc-0008")) == []


def test_task_unknown_to_the_api_gets_a_new_generation(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(
        ledger, "sddc-0010", phase=Phase.UPGRADE_VCENTER, status=Status.RUNNING, snapshot_id="s", claim=False
    )
    task = start_task(hook, "sddc-0010", "vcenter")
    record_running(ledger, "sddc-0010", Phase.UPGRADE_VCENTER, task.id)
    sim.drift(kind="task_purged", task_id=task.id)

    report = sweep(ledger, hook, "sddc-0010")

    assert outcomes(report) == [("task_unknown", "forget_task", "repaired")]
    op = ledger.get_operation(ROLLOUT, WAVE, "sddc-0010", Phase.UPGRADE_VCENTER)
    assert op is not None and (op.generation, op.task_id) == (1, None)
    assert drift_events(ledger, "sddc-0010") == [("task_unknown", "repaired")]
    assert outcomes(sweep(ledger, hook, "sddc-0010")) == []


# ------------------------------------------------------------------ claims and snapshots


def test_claim_left_by_a_killed_worker(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    # the run upgraded sddc-0011 and was killed before freeing its claim
    sim.drift(kind="sddc_upgraded", sddc_id="sddc-0011", version=TARGET)
    enroll(ledger, "sddc-0011", phase=Phase.DONE, status=Status.SUCCEEDED, snapshot_id="s", finished=True)
    # and another run died with sddc-0012 mid-upgrade
    enroll(ledger, "sddc-0012", phase=Phase.UPGRADE_NSX, status=Status.FAILED, snapshot_id="s", started=True)
    sim.drift(kind="component_changed", sddc_id="sddc-0012", component="vcenter", version=TARGET)

    running = Reconciler(ledger, hook, by="sweep", run_id="sweep-1").sweep_sddc(
        "sddc-0011", lambda _w, _r: RunState.RUNNING
    )
    assert outcomes(running) == []  # its run still runs: not stale

    assert outcomes(sweep(ledger, hook, "sddc-0011")) == [("stale_claim", "release_claim", "repaired")]
    assert ledger.claim_of("sddc-0011") is None
    released = ledger.events(sddc_id="sddc-0011", kinds=["claim_released"])
    assert len(released) == 1 and released[0].data["drift"] == "stale_claim"
    assert outcomes(sweep(ledger, hook, "sddc-0011")) == []

    assert outcomes(sweep(ledger, hook, "sddc-0012")) == [("stale_claim", "needs_human", "flagged")]
    assert ledger.claim_of("sddc-0012") is not None  # never freed mid-upgrade: clearing resumes it
    assert new(sweep(ledger, hook, "sddc-0012")) == []


def test_changed_sddc_without_snapshot(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0013", phase=Phase.UPGRADE_NSX, status=Status.FAILED, claim=False, started=True)
    sim.drift(kind="component_changed", sddc_id="sddc-0013", component="vcenter", version=TARGET)
    assert outcomes(sweep(ledger, hook, "sddc-0013")) == [("snapshot_missing", "needs_human", "flagged")]
    assert new(sweep(ledger, hook, "sddc-0013")) == []

    # the snapshot task had succeeded, only its id was never recorded: adopted
    enroll(ledger, "sddc-0014", phase=Phase.UPGRADE_NSX, status=Status.FAILED, claim=False, started=True)
    task = start_task(hook, "sddc-0014", "snapshot")
    record_running(ledger, "sddc-0014", Phase.SNAPSHOT, task.id, "SUCCEEDED")
    snapshot_id = sim.wait_task(task.id)["result"]["snapshot_id"]
    sim.drift(kind="component_changed", sddc_id="sddc-0014", component="vcenter", version=TARGET)

    assert outcomes(sweep(ledger, hook, "sddc-0014")) == [("snapshot_missing", "adopt_snapshot", "repaired")]
    progress = ledger.get(ROLLOUT, WAVE, "sddc-0014")
    assert progress is not None and progress.snapshot_id == snapshot_id
    assert outcomes(sweep(ledger, hook, "sddc-0014")) == []


# ------------------------------------------------------------------ bad input, dry run


def test_corrupt_ledger_row_is_reported_and_the_sweep_goes_on(
    sim: Any, hook: SddcApiHook, ledger: Ledger
) -> None:
    enroll(ledger, "sddc-0015", claim=False)
    # an older record of sddc-0015 that would be drift if judged: never judged in place of a broken one
    ledger.upsert_progress(
        ROLLOUT,
        "w0",
        "sddc-0015",
        "run-old",
        phase=Phase.DONE,
        status=Status.SUCCEEDED,
        source_version=SOURCE,
        target_version=TARGET,
    )
    enroll(ledger, "sddc-0016", claim=False)
    sim.drift(kind="sddc_upgraded", sddc_id="sddc-0016", version=TARGET)
    engine = create_engine(ledger.url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE rce_progress SET status = 'bogus' WHERE sddc_id = 'sddc-0015' AND wave = :w"),
            {"w": WAVE},
        )
    engine.dispose()

    reports = [sweep(ledger, hook, i) for i in ("sddc-0015", "sddc-0016")]

    assert outcomes(reports[0]) == [("ledger_row_corrupt", "needs_human", "flagged")]
    assert "status" in reports[0].outcomes[0].finding.message
    assert outcomes(reports[1]) == [("sddc_changed_out_of_band", "adopt_state", "repaired")]
    assert drift_events(ledger, "sddc-0015") == [("ledger_row_corrupt", "flagged")]
    assert [new(sweep(ledger, hook, i)) for i in ("sddc-0015", "sddc-0016")] == [[], []]


def test_body_outside_the_contract_is_its_own_drift(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0009", claim=False)
    sim.faults(malformed_sddc_ids=["sddc-0009"])
    try:
        report = sweep(ledger, hook, "sddc-0009")
        assert outcomes(report) == [("api_contract_violation", "needs_human", "flagged")]
        assert new(sweep(ledger, hook, "sddc-0009")) == []
    finally:
        sim.reset_faults()
    assert drift_events(ledger, "sddc-0009") == [("api_contract_violation", "flagged")]
    assert len(sweep(ledger, hook, "sddc-0009").resolved) == 1


def test_dry_run_judges_and_changes_nothing(sim: Any, hook: SddcApiHook, ledger: Ledger) -> None:
    enroll(ledger, "sddc-0003", claim=True)  # a fresh ledger: sddc-0003's nsx is back at the source
    host_id = first_host(sim, "sddc-0003")
    sim.drift(kind="host_maintenance", sddc_id="sddc-0003", host_id=host_id)
    before_events = len(ledger.events(limit=10_000))
    mutations = sim.counters()["mutating_calls"]

    report = sweep(ledger, hook, "sddc-0003", dry_run=True)

    assert sorted(outcomes(report)) == [
        ("host_maintenance_idle", "exit_maintenance", "would_repair"),
        ("stale_claim", "release_claim", "would_repair"),
    ]
    assert len(ledger.events(limit=10_000)) == before_events
    assert sim.counters()["mutating_calls"] == mutations
    assert ledger.claim_of("sddc-0003") is not None
    assert json.loads(report.model_dump_json())["outcomes"][0]["finding"]["kind"]  # XCom-safe
    # the real sweep then repairs both
    assert sorted(o for _, _, o in outcomes(sweep(ledger, hook, "sddc-0003"))) == ["repaired", "repaired"]
