"""A phase killed after the API accepted its start and before the ledger recorded the task,
then retried, against the real simulator. Found by the distributed test
(tests/integration/test_distributed_celery.py): the task ended while no execution ran, the
retry found the goal holding and ended, and the ledger never named the task. The retry
finds it by this run's trace id (the API echoes `traceparent` into the tasks it creates)."""

from __future__ import annotations

from typing import Any

import pytest

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import EventKind, Phase
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.snapshot import SnapshotOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET, SDDC = "r", "w", "manual__2026-11-27", "1.26.0", "sddc-0001"
QUICK = {"inline_wait_s": 20.0, "resume_delay_s": 0.0, "poll_min_s": 0.05}


class Killed(BaseException):
    """The worker process dying: nothing below it runs, nothing catches it."""


class Ti:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number


def _snapshotted(server: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    """The SDDC enrolled in the run and its snapshot taken: where the upgrade phases begin."""
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    _enroll(ledger, R, W, SDDC, RUN, TARGET, "1.25.0")
    _op(SnapshotOperator, "snapshot").execute({"run_id": RUN, "ti": Ti(1)})
    return server


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    return _snapshotted(sim_factory(size=2, time_scale=6000), monkeypatch, ledger)


def _op(cls: type[SddcPhaseOperator], task_id: str) -> SddcPhaseOperator:
    return cls(task_id=task_id, sddc_id=SDDC, target_version=TARGET, rollout=R, wave=W, **QUICK)


def _killed_at_record(mocker: Any, op: SddcPhaseOperator, record_ops: int) -> None:
    """Run the first execution until its `record_ops`-th task record, and kill it there."""
    real = PhaseRun.record_operation
    calls = {"n": 0}

    def record(run: PhaseRun, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == record_ops:
            raise Killed
        real(run, *args)

    patched = mocker.patch.object(PhaseRun, "record_operation", autospec=True, side_effect=record)
    with pytest.raises(Killed):
        op.execute({"run_id": RUN, "ti": Ti(1)})
    mocker.stop(patched)


def _tasks(fleet: Any, type_: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = fleet.request("GET", f"/api/v1/sddcs/{SDDC}/tasks?type={type_}").json()[
        "items"
    ]
    return items


def test_a_retry_records_the_task_a_killed_execution_started_and_the_phase_counts_as_done(
    fleet: Any, ledger: Ledger, mocker: Any
) -> None:
    _killed_at_record(mocker, _op(VcenterUpgradeOperator, "upgrade_vcenter"), record_ops=1)
    assert ledger.get_operation(R, W, SDDC, Phase.UPGRADE_VCENTER, host_id="") is None
    (started,) = _tasks(fleet, "UPGRADE_VCENTER")
    assert fleet.wait_task(started["id"])["status"] == "SUCCEEDED"  # ended while nothing ran

    message = _op(VcenterUpgradeOperator, "upgrade_vcenter").execute({"run_id": RUN, "ti": Ti(2)})

    op = ledger.get_operation(R, W, SDDC, Phase.UPGRADE_VCENTER, host_id="")
    assert op is not None and op.task_id == started["id"] and op.status == "SUCCEEDED", op
    key = fleet.request("GET", f"/sim/tasks/{started['id']}").json()["idempotency_key"]
    assert op.idempotency_key == key and op.generation == 0
    events = ledger.events(rollout=R, wave=W, sddc_id=SDDC, limit=1000)
    recovered = [e for e in events if e.kind == EventKind.TASK_RECOVERED]
    assert [e.data["task_id"] for e in recovered] == [started["id"]]
    # the phase did the upgrade (its first execution did): succeeded, not skipped as already done
    kinds = [e.kind for e in events if e.phase is Phase.UPGRADE_VCENTER]
    assert EventKind.PHASE_SUCCEEDED in kinds and EventKind.PHASE_SKIPPED not in kinds, kinds
    assert "vcenter" in str(message)
    counters = fleet.counters()
    assert counters["tasks_created"]["UPGRADE_VCENTER"] == 1
    assert counters["duplicate_starts"]["count"] == 0


def test_a_task_still_running_is_recorded_and_waited_for_not_started_again(
    sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger, mocker: Any
) -> None:
    config = {"durations_s": {"UPGRADE_VCENTER": 12000}}  # 2 s
    slow = _snapshotted(sim_factory(size=2, time_scale=6000, config=config), monkeypatch, ledger)
    _killed_at_record(mocker, _op(VcenterUpgradeOperator, "upgrade_vcenter"), record_ops=1)
    (started,) = _tasks(slow, "UPGRADE_VCENTER")
    assert started["status"] in ("QUEUED", "RUNNING")

    _op(VcenterUpgradeOperator, "upgrade_vcenter").execute({"run_id": RUN, "ti": Ti(2)})

    op = ledger.get_operation(R, W, SDDC, Phase.UPGRADE_VCENTER, host_id="")
    assert op is not None and op.task_id == started["id"] and op.status == "SUCCEEDED", op
    events = ledger.events(rollout=R, wave=W, sddc_id=SDDC, limit=1000)
    kinds = [e.kind for e in events if e.phase is Phase.UPGRADE_VCENTER]
    assert EventKind.TASK_RECOVERED in kinds and EventKind.TASK_STARTED not in kinds, kinds
    assert slow.counters()["tasks_created"]["UPGRADE_VCENTER"] == 1
    release = next(r for r in slow.state()["releases"] if r["version"] == TARGET)
    assert slow.sddc(SDDC)["components"]["vcenter"] == release["components"]["vcenter"]


def test_the_first_execution_does_not_look_for_unrecorded_tasks(fleet: Any, ledger: Ledger) -> None:
    fleet.reset_counters()
    _op(VcenterUpgradeOperator, "upgrade_vcenter").execute({"run_id": RUN, "ti": Ti(1)})
    routes = {r["route"] for r in fleet.counters()["requests"]}
    assert "/api/v1/sddcs/{sddc_id}/tasks" not in routes, routes


def test_a_killed_maintenance_entry_is_recorded_as_the_entry_of_its_host(
    fleet: Any, ledger: Ledger, mocker: Any
) -> None:
    """Killed right after its first host's enter-maintenance started; the retry records it
    as that host's entry (a maintenance task does not say which way it went) and goes on."""
    for phase, task_id in ((VcenterUpgradeOperator, "upgrade_vcenter"), (NsxUpgradeOperator, "upgrade_nsx")):
        _op(phase, task_id).execute({"run_id": RUN, "ti": Ti(1)})
    _killed_at_record(mocker, _op(HostsUpgradeOperator, "upgrade_hosts"), record_ops=1)
    (entered,) = _tasks(fleet, "HOST_MAINTENANCE")
    assert fleet.wait_task(entered["id"])["status"] == "SUCCEEDED"

    _op(HostsUpgradeOperator, "upgrade_hosts").execute({"run_id": RUN, "ti": Ti(2)})

    host = entered["host_id"]
    enter = ledger.get_operation(R, W, SDDC, Phase.UPGRADE_HOSTS, host_id=f"{host}/enter")
    exit_ = ledger.get_operation(R, W, SDDC, Phase.UPGRADE_HOSTS, host_id=f"{host}/exit")
    assert enter is not None and enter.task_id == entered["id"], enter
    assert exit_ is not None and exit_.task_id not in (None, entered["id"]), exit_
    hosts = fleet.sddc(SDDC)["hosts"]
    counters = fleet.counters()
    assert counters["tasks_created"]["HOST_MAINTENANCE"] == 2 * len(hosts)
    assert counters["duplicate_starts"]["count"] == 0
    ops = ledger.operations_of(R, W, SDDC)
    assert len([o for o in ops if o.phase is Phase.UPGRADE_HOSTS]) == 3 * len(hosts)
    assert all(o.task_id and o.status == "SUCCEEDED" for o in ops), ops


def test_a_failed_listing_changes_nothing_and_the_phase_goes_on(
    fleet: Any, ledger: Ledger, mocker: Any
) -> None:
    """The lookup is best-effort: a listing the API refuses, or answers against the contract,
    leaves the ledger as the kill left it, and the phase decides on the real SDDC as before."""
    from rce_lib.errors import ContractViolation
    from rce_lib.hooks.sddc_api import SddcApiHook

    _killed_at_record(mocker, _op(VcenterUpgradeOperator, "upgrade_vcenter"), record_ops=1)
    (started,) = _tasks(fleet, "UPGRADE_VCENTER")
    fleet.wait_task(started["id"])
    listing = mocker.patch.object(
        SddcApiHook, "list_sddc_tasks", side_effect=ContractViolation("a task of sddc-x")
    )

    _op(VcenterUpgradeOperator, "upgrade_vcenter").execute({"run_id": RUN, "ti": Ti(2)})

    assert listing.call_count == 1
    assert ledger.get_operation(R, W, SDDC, Phase.UPGRADE_VCENTER, host_id="") is None
    kinds = [e.kind for e in ledger.events(rollout=R, wave=W, sddc_id=SDDC, limit=1000)]
    assert EventKind.TASK_RECOVERED not in kinds and EventKind.PHASE_SKIPPED in kinds, kinds
    assert fleet.counters()["tasks_created"]["UPGRADE_VCENTER"] == 1
