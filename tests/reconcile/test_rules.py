"""The reconciliation rules, pure: no Airflow, no network, no database."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from _world import (
    NOW,
    RELEASES,
    ROLLOUT,
    SOURCE,
    TARGET,
    WAVE,
    S,
    T,
    claim,
    host,
    operation,
    progress,
    sddc,
    task,
)

from rce_lib.api.models import Sddc
from rce_lib.errors import Reason
from rce_lib.ledger.models import ClaimHolder, Operation, Phase, Progress, Status
from rce_lib.reconcile.drift import (
    DriftKind,
    Finding,
    LedgerView,
    RealView,
    RepairKind,
    RuleContext,
    RunState,
)
from rce_lib.reconcile.rules import PhaseAction, corrupt_row, decide, find_drift


def judge(
    real: Sddc | None,
    p: Progress | None = None,
    *,
    ops: tuple[Operation, ...] = (),
    holder: ClaimHolder | None = None,
    run: RunState = RunState.ENDED,
    claim_run: RunState = RunState.ENDED,
    phase: Phase | None = None,
    tasks: dict[str, object] | None = None,
    removed: bool = False,
    violation: str | None = None,
) -> list[Finding]:
    view = LedgerView(
        rollout=ROLLOUT,
        wave=WAVE,
        sddc_id="sddc-0001",
        progress=p,
        operations=ops,
        claim=holder,
        run_state=run,
        claim_run_state=claim_run,
        source=RELEASES[SOURCE],
        target=RELEASES[TARGET],
    )
    found = find_drift(
        view,
        RealView(sddc=real, removed=removed, violation=violation, tasks=tasks or {}),  # type: ignore[arg-type]
        RuleContext(now=NOW, phase=phase, lease_s=3600),
    )
    for f in found:
        assert f.message.startswith(f"[{f.kind.value}]"), f  # the name is in every message
    return found


def kinds(found: list[Finding]) -> list[tuple[DriftKind, RepairKind]]:
    return [(f.kind, f.repair) for f in found]


def test_reconcile_modules_import_no_airflow() -> None:
    code = (
        "import sys, rce_lib.reconcile.rules, rce_lib.reconcile.apply, rce_lib.reconcile.inflight; "
        "sys.exit(1 if any(m.split('.')[0] == 'airflow' for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_drift_kind_names_are_stable_snake_case() -> None:
    assert {k.value for k in DriftKind} == {
        "sddc_changed_out_of_band",
        "components_partly_upgraded",
        "host_maintenance_idle",
        "host_disconnected",
        "sddc_removed",
        "task_succeeded_unrecorded",
        "task_failed_unrecorded",
        "task_unknown",
        "stale_claim",
        "snapshot_missing",
        "ledger_row_corrupt",
        "api_contract_violation",
    }


def test_consistent_record_has_no_drift() -> None:
    assert judge(sddc(), progress()) == []
    done = sddc(version=TARGET, vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", T.esx)])
    assert judge(done, progress(Phase.DONE, Status.SUCCEEDED, snapshot_id="s")) == []
    mid = sddc(vcenter=T.vcenter)
    assert judge(mid, progress(Phase.UPGRADE_VCENTER, Status.SUCCEEDED, snapshot_id="s")) == []
    assert judge(mid, progress(Phase.UPGRADE_VCENTER, Status.FAILED, snapshot_id="s")) == []


def test_sddc_upgraded_out_of_band_is_adopted_as_done() -> None:
    real = sddc(version=TARGET, vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", T.esx)])
    (found,) = judge(real, progress(Phase.PRECHECK, Status.FAILED, started=True))
    assert (found.kind, found.repair) == (DriftKind.SDDC_CHANGED_OUT_OF_BAND, RepairKind.ADOPT_STATE)
    assert (found.data["adopt_phase"], found.data["adopt_status"]) == ("done", "succeeded")


def test_sddc_reverted_or_moved_elsewhere_needs_a_human() -> None:
    reverted = judge(sddc(), progress(Phase.DONE, Status.SUCCEEDED, snapshot_id="s"))
    assert kinds(reverted) == [(DriftKind.SDDC_CHANGED_OUT_OF_BAND, RepairKind.NEEDS_HUMAN)]
    elsewhere = sddc(version="1.27.0", vcenter="vc27", nsx="nsx27", hosts=[host("h1", "esx27")])
    found = judge(elsewhere, progress(Phase.UPGRADE_NSX, Status.SUCCEEDED, snapshot_id="s"))
    assert kinds(found) == [(DriftKind.SDDC_CHANGED_OUT_OF_BAND, RepairKind.NEEDS_HUMAN)]
    assert found[0].blocks and found[0].reason is Reason.DRIFT_NEEDS_HUMAN


def test_components_ahead_in_engine_order_are_adopted() -> None:
    real = sddc(vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", T.esx), host("h2")])
    (found,) = judge(real, progress(Phase.SNAPSHOT, Status.SUCCEEDED, snapshot_id="s"))
    assert (found.kind, found.repair) == (DriftKind.COMPONENTS_PARTLY_UPGRADED, RepairKind.ADOPT_STATE)
    assert (found.data["adopt_phase"], found.data["adopt_status"]) == ("upgrade_hosts", "pending")
    (found,) = judge(sddc(vcenter=T.vcenter), progress(Phase.PRECHECK, Status.PENDING, snapshot_id="s"))
    assert (found.data["adopt_phase"], found.data["adopt_status"]) == ("upgrade_vcenter", "succeeded")


@pytest.mark.parametrize(
    "real",
    [
        sddc(nsx=T.nsx),  # nsx before vcenter: the engine never does that
        sddc(vcenter="vc-hotfix"),  # a build of neither release
        sddc(vcenter=T.vcenter, nsx=T.nsx),  # behind: ledger says hosts done, components otherwise
    ],
)
def test_a_mix_the_engine_cannot_leave_needs_a_human(real: Sddc) -> None:
    p = progress(Phase.SNAPSHOT, Status.SUCCEEDED, snapshot_id="s")
    if real.components.nsx == T.nsx and real.components.vcenter == T.vcenter:
        p = progress(Phase.POSTCHECK, Status.FAILED, snapshot_id="s")
    found = judge(real, p)
    assert kinds(found) == [(DriftKind.COMPONENTS_PARTLY_UPGRADED, RepairKind.NEEDS_HUMAN)]


def test_idle_host_in_maintenance_exits_but_not_while_the_hosts_phase_works() -> None:
    real = sddc(hosts=[host("h1", state="MAINTENANCE"), host("h2")])
    (found,) = judge(real, progress(Phase.PRECHECK, Status.FAILED))
    assert (found.kind, found.repair, found.data["host_id"]) == (
        DriftKind.HOST_MAINTENANCE_IDLE,
        RepairKind.EXIT_MAINTENANCE,
        "h1",
    )
    hosts_running = progress(Phase.UPGRADE_HOSTS, Status.RUNNING, snapshot_id="s")
    real = sddc(vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", state="MAINTENANCE"), host("h2")])
    assert judge(real, hosts_running, run=RunState.RUNNING) == []
    assert judge(real, hosts_running, phase=Phase.UPGRADE_HOSTS) == []
    # the same record once its run ended: the host was left behind
    assert kinds(judge(real, hosts_running)) == [
        (DriftKind.HOST_MAINTENANCE_IDLE, RepairKind.EXIT_MAINTENANCE)
    ]


def test_host_in_maintenance_with_a_task_on_it_is_not_idle() -> None:
    real = sddc(hosts=[host("h1", state="MAINTENANCE")], active=["t-1"])
    on_host = {"t-1": task("t-1", "RUNNING", type_="UPGRADE_HOST", host_id="h1")}
    assert judge(real, progress(), tasks=on_host) == []
    assert judge(real, progress(), tasks={}) == []  # an active task not read: could be on h1
    rollback = {"t-1": task("t-1", "RUNNING", type_="ROLLBACK")}
    assert judge(real, progress(), tasks=rollback) == []


def test_disconnected_host_needs_a_human_and_blocks_phases_but_not_rollback() -> None:
    real = sddc(hosts=[host("h1", state="DISCONNECTED"), host("h2")])
    (found,) = judge(real, progress())
    assert (found.kind, found.repair, found.subject) == (
        DriftKind.HOST_DISCONNECTED,
        RepairKind.NEEDS_HUMAN,
        "host h1",
    )
    (inflight,) = judge(real, progress(), phase=Phase.UPGRADE_HOSTS)
    assert inflight.blocks and inflight.reason is Reason.HOST_DISCONNECTED
    (rollback,) = judge(real, progress(), phase=Phase.ROLLBACK)
    assert not rollback.blocks


def test_removed_sddc_and_contract_violation_need_a_human() -> None:
    (removed,) = judge(None, progress(), removed=True)
    assert (removed.kind, removed.repair, removed.reason) == (
        DriftKind.SDDC_REMOVED,
        RepairKind.NEEDS_HUMAN,
        Reason.SDDC_REMOVED,
    )
    (bad,) = judge(None, progress(), violation="version: pattern mismatch")
    assert (bad.kind, bad.repair) == (DriftKind.API_CONTRACT_VIOLATION, RepairKind.NEEDS_HUMAN)
    row = corrupt_row(ROLLOUT, WAVE, "sddc-0001", "status: bogus")
    assert (row.kind, row.repair, row.blocks) == (DriftKind.LEDGER_ROW_CORRUPT, RepairKind.NEEDS_HUMAN, True)


@pytest.mark.parametrize(
    ("answer", "kind", "repair"),
    [
        (task("t-1", "SUCCEEDED"), DriftKind.TASK_SUCCEEDED_UNRECORDED, RepairKind.REATTACH_TASK),
        (task("t-1", "FAILED"), DriftKind.TASK_FAILED_UNRECORDED, RepairKind.REATTACH_TASK),
        (task("t-1", "CANCELED"), DriftKind.TASK_FAILED_UNRECORDED, RepairKind.REATTACH_TASK),
        (None, DriftKind.TASK_UNKNOWN, RepairKind.FORGET_TASK),
    ],
)
def test_task_the_ledger_holds_as_running(answer: object, kind: DriftKind, repair: RepairKind) -> None:
    p = progress(Phase.UPGRADE_VCENTER, Status.RUNNING, snapshot_id="s", started=True)
    ops = (operation(Phase.UPGRADE_VCENTER, "t-1", generation=2),)
    (found,) = judge(sddc(), p, ops=ops, tasks={"t-1": answer})
    assert (found.kind, found.repair, found.task_id, found.generation) == (kind, repair, "t-1", 2)
    assert found.phase is Phase.UPGRADE_VCENTER
    # a running task, or a run that still watches it: no drift
    assert judge(sddc(), p, ops=ops, tasks={"t-1": task("t-1", "RUNNING")}) == []
    assert judge(sddc(), p, ops=ops, tasks={"t-1": answer}, run=RunState.RUNNING) == []


def test_claim_of_an_ended_run_is_released_when_its_work_is_over() -> None:
    done = sddc(version=TARGET, vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", T.esx)])
    p = progress(Phase.DONE, Status.SUCCEEDED, snapshot_id="s", started=True)
    (found,) = judge(done, p, holder=claim())
    assert (found.kind, found.repair) == (DriftKind.STALE_CLAIM, RepairKind.RELEASE_CLAIM)
    assert judge(done, p, holder=claim(), claim_run=RunState.RUNNING) == []
    # claimed, never enrolled (killed between claim and enrolment)
    assert kinds(judge(sddc(), None, holder=claim())) == [(DriftKind.STALE_CLAIM, RepairKind.RELEASE_CLAIM)]


def test_claim_of_an_ended_run_mid_upgrade_needs_a_human() -> None:
    p = progress(Phase.UPGRADE_VCENTER, Status.FAILED, snapshot_id="s", started=True)
    (found,) = judge(sddc(), p, holder=claim())
    assert (found.kind, found.repair) == (DriftKind.STALE_CLAIM, RepairKind.NEEDS_HUMAN)


def test_claim_of_a_run_airflow_cannot_tell_is_stale_only_past_the_lease() -> None:
    p = progress(Phase.DONE, Status.SUCCEEDED, snapshot_id="s", updated_at=NOW - timedelta(hours=2))
    done = sddc(version=TARGET, vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", T.esx)])
    assert judge(done, p, holder=claim(age=timedelta(minutes=30)), claim_run=RunState.UNKNOWN) == []
    old = judge(done, p, holder=claim(age=timedelta(hours=2)), claim_run=RunState.UNKNOWN)
    assert kinds(old) == [(DriftKind.STALE_CLAIM, RepairKind.RELEASE_CLAIM)]


def test_claim_rules_do_not_run_in_flight() -> None:
    p = progress(Phase.DONE, Status.SUCCEEDED, snapshot_id="s")
    done = sddc(version=TARGET, vcenter=T.vcenter, nsx=T.nsx, hosts=[host("h1", T.esx)])
    assert judge(done, p, holder=claim(), phase=Phase.POSTCHECK) == []


def test_changed_sddc_without_snapshot_needs_a_human_and_blocks_upgrades() -> None:
    p = progress(Phase.UPGRADE_VCENTER, Status.SUCCEEDED, started=True)
    found = judge(sddc(vcenter=T.vcenter), p)
    assert kinds(found) == [(DriftKind.SNAPSHOT_MISSING, RepairKind.NEEDS_HUMAN)]
    (inflight,) = judge(sddc(vcenter=T.vcenter), p, phase=Phase.UPGRADE_NSX)
    assert inflight.blocks and inflight.reason is Reason.SNAPSHOT_MISSING
    # unchanged, or fully upgraded and not failed: nothing a rollback would need
    assert judge(sddc(), progress(Phase.SNAPSHOT, Status.SUCCEEDED)) == []


def test_snapshot_taken_but_not_recorded_is_adopted() -> None:
    p = progress(Phase.UPGRADE_VCENTER, Status.FAILED, started=True)
    ops = (operation(Phase.SNAPSHOT, "t-snap", status="SUCCEEDED"),)
    answer = task("t-snap", "SUCCEEDED", type_="SNAPSHOT", result={"snapshot_id": "snap-1"})
    (found,) = judge(sddc(vcenter=T.vcenter), p, ops=ops, tasks={"t-snap": answer})
    assert (found.kind, found.repair, found.data["snapshot_id"]) == (
        DriftKind.SNAPSHOT_MISSING,
        RepairKind.ADOPT_SNAPSHOT,
        "snap-1",
    )


def test_watched_sweep_leaves_the_engines_own_progress_alone() -> None:
    """A running wave is ahead of its ledger between a task's end and the phase's record."""
    p = progress(Phase.UPGRADE_VCENTER, Status.RUNNING, snapshot_id="s", started=True)
    real = sddc(vcenter=T.vcenter, nsx=T.nsx)
    assert judge(real, p, run=RunState.RUNNING) == []
    assert kinds(judge(real, p)) == [(DriftKind.COMPONENTS_PARTLY_UPGRADED, RepairKind.ADOPT_STATE)]


def test_decide_stops_on_blocking_adopts_on_safe_and_proceeds_on_nothing() -> None:
    assert decide([]).action is PhaseAction.PROCEED
    safe = judge(sddc(vcenter=T.vcenter), progress(Phase.SNAPSHOT, Status.SUCCEEDED, snapshot_id="s"))
    decision = decide(safe)
    assert decision.action is PhaseAction.ADOPT and decision.reason is None
    blocking = judge(sddc(hosts=[host("h1", state="DISCONNECTED")]), progress(), phase=Phase.PRECHECK)
    decision = decide([*safe, *blocking])
    assert decision.action is PhaseAction.STOP and decision.reason is Reason.HOST_DISCONNECTED
    assert "host_disconnected" in decision.message


def test_fingerprint_names_kind_record_and_subject() -> None:
    (found,) = judge(sddc(hosts=[host("h1", state="DISCONNECTED")]), progress())
    assert found.fingerprint == f"host_disconnected:{ROLLOUT}/{WAVE}/sddc-0001:host h1"
    assert S.vcenter != T.vcenter  # the builders really differ
