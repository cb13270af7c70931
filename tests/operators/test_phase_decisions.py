"""What each phase decides from the real SDDC (next_step), without Airflow running anything."""

from __future__ import annotations

from typing import Any

import pytest
from _fakes import RELEASES, SDDC_ID, TARGET, FakeHook, FakeRun, host, phase_kwargs, progress, sddc
from airflow.sdk.exceptions import TaskDeferred

from rce_lib.api.models import Health
from rce_lib.errors import Reason
from rce_lib.operators.base import PhaseError, PhaseFailedForGood
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.postcheck import PostcheckOperator
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.rollback import RollbackOperator
from rce_lib.operators.snapshot import SnapshotOperator
from rce_lib.operators.steps import Done, Start, Wait

OLD = RELEASES["1.25.0"].components
NEW = RELEASES[TARGET].components
C1, C2 = "sddc-0001-c1", "sddc-0001-c2"


def _start(step: Any, run: FakeRun) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The hook call a Start step makes (with a fixed key)."""
    assert isinstance(step, Start), step
    step.call(run.hook, "key-1")  # type: ignore[arg-type]
    return run.hook.calls[-1]


# ------------------------------------------------------------------ hosts


def hosts_op() -> HostsUpgradeOperator:
    return HostsUpgradeOperator(task_id="upgrade_hosts", **phase_kwargs())


def test_hosts_first_host_in_cluster_order_enters_maintenance(run: FakeRun) -> None:
    hosts = [
        host("sddc-0001-c2-h1", C2, OLD.esx),
        host("sddc-0001-c1-h2", C1, OLD.esx),
        host("sddc-0001-c1-h1", C1, OLD.esx),
    ]
    step = hosts_op().next_step(run, sddc(vcenter=NEW.vcenter, nsx=NEW.nsx, hosts=hosts))
    assert isinstance(step, Start) and (step.op, step.host_id) == ("host_enter", "sddc-0001-c1-h1")
    assert _start(step, run) == ("set_host_maintenance", (SDDC_ID, "sddc-0001-c1-h1", True), {"key": "key-1"})


def test_hosts_host_in_maintenance_is_upgraded_before_any_other_enters(run: FakeRun) -> None:
    hosts = [
        host("sddc-0001-c1-h1", C1, OLD.esx),
        host("sddc-0001-c2-h1", C2, OLD.esx, "MAINTENANCE"),  # sorts last, but is half done
    ]
    step = hosts_op().next_step(run, sddc(hosts=hosts))
    assert isinstance(step, Start) and (step.op, step.host_id) == ("host_upgrade", "sddc-0001-c2-h1")
    assert _start(step, run) == ("start_host_upgrade", (SDDC_ID, "sddc-0001-c2-h1", TARGET), {"key": "key-1"})


def test_hosts_upgraded_host_in_maintenance_exits_before_any_other_enters(run: FakeRun) -> None:
    hosts = [host("sddc-0001-c1-h1", C1, NEW.esx, "MAINTENANCE"), host("sddc-0001-c1-h2", C1, OLD.esx)]
    step = hosts_op().next_step(run, sddc(hosts=hosts))
    assert isinstance(step, Start) and (step.op, step.host_id) == ("host_exit", "sddc-0001-c1-h1")
    assert _start(step, run) == (
        "set_host_maintenance",
        (SDDC_ID, "sddc-0001-c1-h1", False),
        {"key": "key-1"},
    )


def test_hosts_skips_hosts_already_at_target(run: FakeRun) -> None:
    hosts = [host("sddc-0001-c1-h1", C1, NEW.esx), host("sddc-0001-c1-h2", C1, OLD.esx)]
    step = hosts_op().next_step(run, sddc(hosts=hosts))
    assert isinstance(step, Start) and (step.op, step.host_id) == ("host_enter", "sddc-0001-c1-h2")


def test_hosts_disconnected_host_fails_the_phase_without_a_verdict(run: FakeRun) -> None:
    hosts = [host("sddc-0001-c1-h1", C1, OLD.esx), host("sddc-0001-c1-h2", C1, OLD.esx, "DISCONNECTED")]
    with pytest.raises(PhaseError) as err:
        hosts_op().next_step(run, sddc(hosts=hosts))
    assert err.value.reason == Reason.HOST_DISCONNECTED
    assert "sddc-0001-c1-h2" in str(err.value)
    # infrastructure, not a downstream verdict: no automatic rollback
    assert run.failures == [
        {
            "phase": "upgrade_hosts",
            "reason": "HOST_DISCONNECTED",
            "code": "HOST_DISCONNECTED",
            "retryable": True,
            "verdict": False,
        }
    ]


def test_hosts_disconnected_on_last_try_fails_for_good_still_without_verdict(run: FakeRun) -> None:
    run.is_last_try = True
    with pytest.raises(PhaseFailedForGood):
        hosts_op().next_step(run, sddc(hosts=[host("sddc-0001-c1-h1", C1, NEW.esx, "DISCONNECTED")]))
    assert run.failures[-1]["verdict"] is False


def test_hosts_all_at_target_is_done(run: FakeRun) -> None:
    hosts = [host("sddc-0001-c1-h1", C1, NEW.esx), host("sddc-0001-c2-h1", C2, NEW.esx)]
    step = hosts_op().next_step(run, sddc(hosts=hosts))
    assert isinstance(step, Done)
    assert "2 hosts" in step.message and NEW.esx in step.message
    assert run.hook.calls == []


# ------------------------------------------------------------------ components


def test_vcenter_at_target_is_done_without_doing_anything(run: FakeRun) -> None:
    op = VcenterUpgradeOperator(task_id="upgrade_vcenter", **phase_kwargs())
    step = op.next_step(run, sddc(vcenter=NEW.vcenter))
    assert step == Done(f"vcenter at {NEW.vcenter}", did_nothing=True)


def test_vcenter_behind_starts_its_upgrade(run: FakeRun) -> None:
    op = VcenterUpgradeOperator(task_id="upgrade_vcenter", **phase_kwargs())
    step = op.next_step(run, sddc())
    assert isinstance(step, Start) and step.op == "vcenter" and step.host_id is None
    assert _start(step, run) == ("start_component_upgrade", (SDDC_ID, "vcenter", TARGET), {"key": "key-1"})


def test_nsx_before_vcenter_is_refused(run: FakeRun) -> None:
    op = NsxUpgradeOperator(task_id="upgrade_nsx", **phase_kwargs())
    with pytest.raises(PhaseError) as err:
        op.next_step(run, sddc())  # vcenter still at the old build
    assert err.value.reason == Reason.CONFLICT
    assert run.failures[-1]["verdict"] is False
    assert run.hook.calls == []


def test_nsx_after_vcenter_starts_its_upgrade(run: FakeRun) -> None:
    op = NsxUpgradeOperator(task_id="upgrade_nsx", **phase_kwargs())
    step = op.next_step(run, sddc(vcenter=NEW.vcenter))
    assert _start(step, run) == ("start_component_upgrade", (SDDC_ID, "nsx", TARGET), {"key": "key-1"})


def test_nsx_at_target_is_done(run: FakeRun) -> None:
    op = NsxUpgradeOperator(task_id="upgrade_nsx", **phase_kwargs())
    assert op.next_step(run, sddc(vcenter=NEW.vcenter, nsx=NEW.nsx)) == Done(
        f"nsx at {NEW.nsx}", did_nothing=True
    )


# ------------------------------------------------------------------ precheck and snapshot


def precheck_op() -> PrecheckOperator:
    return PrecheckOperator(task_id="precheck", **phase_kwargs())


def test_precheck_sddc_at_target_is_done(run: FakeRun) -> None:
    step = precheck_op().next_step(run, sddc(TARGET))
    assert isinstance(step, Done) and step.did_nothing


def test_precheck_passed_earlier_is_not_repeated(run: FakeRun) -> None:
    run.succeeded_ops.add(("precheck", None))
    step = precheck_op().next_step(run, sddc())
    assert isinstance(step, Done) and step.did_nothing
    assert run.hook.calls == []
    assert run.started == []  # the failure stays as recorded: nothing was rolled back


def test_precheck_starts_for_a_supported_path(run: FakeRun) -> None:
    step = precheck_op().next_step(run, sddc())
    assert _start(step, run) == ("start_precheck", (SDDC_ID, TARGET), {"key": "key-1"})


def test_precheck_unsupported_path_fails_for_good_with_a_verdict(run: FakeRun) -> None:
    with pytest.raises(PhaseFailedForGood) as err:
        precheck_op().next_step(run, sddc("1.24.0"))
    assert err.value.reason == Reason.UPGRADE_PATH_NOT_SUPPORTED
    assert "1.25.0" in str(err.value)  # names what it may upgrade from
    assert run.failures[-1]["verdict"] is True


def test_snapshot_taken_earlier_is_not_taken_again(run: FakeRun) -> None:
    run.ledger_progress = progress(snapshot_id="snap-1")
    step = SnapshotOperator(task_id="snapshot", **phase_kwargs()).next_step(run, sddc())
    assert isinstance(step, Done) and step.did_nothing and "snap-1" in step.message


def test_snapshot_starts_when_there_is_none(run: FakeRun) -> None:
    run.ledger_progress = progress()
    step = SnapshotOperator(task_id="snapshot", **phase_kwargs()).next_step(run, sddc())
    name, args, kwargs = _start(step, run)
    assert (name, args, kwargs["key"]) == ("start_snapshot", (SDDC_ID,), "key-1")


# ------------------------------------------------------------------ postcheck


def healthy(error_rate: float = 0.01, p95: float = 120.0, status: str = "HEALTHY") -> Health:
    return Health.model_validate(
        {
            "sddc_id": SDDC_ID,
            "status": status,
            "window_s": 300,
            "error_rate": error_rate,
            "p95_latency_ms": p95,
        }
    )


def postcheck_op() -> PostcheckOperator:
    return PostcheckOperator(
        task_id="postcheck", max_error_rate=0.05, max_p95_latency_ms=800, **phase_kwargs()
    )


def test_postcheck_healthy_sddc_at_target_is_done(run: FakeRun) -> None:
    run.hook = FakeHook(health=healthy())
    step = postcheck_op().next_step(run, sddc(TARGET))
    assert isinstance(step, Done) and not step.did_nothing
    assert run.events == []


def test_postcheck_lists_every_problem(run: FakeRun) -> None:
    run.hook = FakeHook(health=healthy(error_rate=0.2, p95=2000.0, status="UNHEALTHY"))
    hosts = [host("sddc-0001-c1-h1", C1, NEW.esx), host("sddc-0001-c1-h2", C1, OLD.esx, "MAINTENANCE")]
    problems = postcheck_op().problems(run, sddc(TARGET, hosts=hosts, status="UPGRADING"))
    assert len(problems) == 5, problems
    version, status, down, errors, latency = problems
    assert "not all at 1.26.0" in version
    assert "UPGRADING" in status
    assert "sddc-0001-c1-h2" in down and "sddc-0001-c1-h1" not in down
    assert "0.200 > 0.050" in errors
    assert "2000 ms > 800 ms" in latency


def test_postcheck_unhealthy_waits_then_fails_with_a_verdict(run: FakeRun) -> None:
    run.hook = FakeHook(health=healthy(error_rate=0.3))
    op = postcheck_op()
    for check in (1, 2):
        with pytest.raises(TaskDeferred):
            op.next_step(run, sddc(TARGET))
        assert run.count_event("postcheck_unhealthy") == check
    with pytest.raises(PhaseFailedForGood) as err:
        op.next_step(run, sddc(TARGET))
    assert err.value.reason == Reason.POSTCHECK_UNHEALTHY
    assert run.failures == [
        {
            "phase": "postcheck",
            "reason": "POSTCHECK_UNHEALTHY",
            "code": "POSTCHECK_UNHEALTHY",
            "retryable": False,
            "verdict": True,
        }
    ]


# ------------------------------------------------------------------ rollback


def rollback_op() -> RollbackOperator:
    return RollbackOperator(task_id="rollback", **phase_kwargs())


def test_rollback_without_source_release_has_nothing_to_undo(run: FakeRun) -> None:
    step = rollback_op().next_step(run, sddc(vcenter=NEW.vcenter))
    assert isinstance(step, Done) and step.did_nothing


def test_rollback_restores_a_changed_sddc_from_its_snapshot(run: FakeRun) -> None:
    run.source = RELEASES["1.25.0"]
    run.ledger_progress = progress(snapshot_id="snap-7")
    step = rollback_op().next_step(run, sddc(vcenter=NEW.vcenter, nsx=NEW.nsx))
    assert isinstance(step, Start) and step.op == "rollback"
    assert run.started == ["rollback"]  # marked in the ledger only once there is something to undo
    assert _start(step, run) == ("start_rollback", (SDDC_ID, "snap-7"), {"key": "key-1"})


def test_rollback_host_left_in_maintenance_is_not_restored(run: FakeRun) -> None:
    run.source = RELEASES["1.25.0"]
    run.ledger_progress = progress(snapshot_id="snap-7")
    hosts = [host("sddc-0001-c1-h1", C1, OLD.esx, "MAINTENANCE")]
    step = rollback_op().next_step(run, sddc(hosts=hosts))
    assert isinstance(step, Start) and step.op == "rollback"


def test_rollback_changed_sddc_without_snapshot_fails_for_a_human(run: FakeRun) -> None:
    run.source = RELEASES["1.25.0"]
    run.ledger_progress = progress(snapshot_id=None)
    with pytest.raises(PhaseFailedForGood) as err:
        rollback_op().next_step(run, sddc(vcenter=NEW.vcenter))
    assert err.value.reason == Reason.SNAPSHOT_MISSING


def test_rollback_of_an_sddc_never_changed_has_nothing_to_undo(run: FakeRun) -> None:
    run.source = RELEASES["1.25.0"]
    run.ledger_progress = progress(snapshot_id="snap-7")
    step = rollback_op().next_step(run, sddc())
    assert isinstance(step, Done) and step.did_nothing
    assert run.hook.calls == []
    assert run.started == []  # the failure stays as recorded: nothing was rolled back


def test_rollback_restored_sddc_is_done_once_ready(run: FakeRun) -> None:
    run.source = RELEASES["1.25.0"]
    run.ledger_progress = progress(snapshot_id="snap-7")
    run.operations[("rollback", None)] = object()  # a rollback task was started earlier
    assert rollback_op().next_step(run, sddc()) == Done("at 1.25.0 again")
    with pytest.raises(TaskDeferred):
        rollback_op().next_step(run, sddc(status="UPGRADING"))
    assert run.events[-1][0] == "phase_waiting"


def test_steps_are_plain_values() -> None:
    assert Wait(5.0, "later") == Wait(5.0, "later")
    assert Done("x") != Done("x", did_nothing=True)
