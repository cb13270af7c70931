"""PhaseTrigger: a phase that waits goes on in the triggerer (its waits, its next steps) and
ends the task there; a failure, or anything the triggerer cannot carry on, goes back to a
worker. Against the real simulator, driven the way the triggerer drives a trigger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase, Status
from rce_lib.operators.base import PhaseError
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.snapshot import SnapshotOperator
from rce_lib.triggers import phase as phase_module
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from rce_lib.triggers.phase import PhaseTrigger
from tests.waiting import first_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET, TOKEN = "r", "w", "manual__2026-11-26", "1.26.0", "phase-secret-token"


class Ti:
    try_number = 1
    map_index = 3
    dag_id = "rce_wave_w"
    task_id = "bulk.upgrade_hosts"


CONTEXT: dict[str, Any] = {"run_id": RUN, "ti": Ti()}


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    server = sim_factory(size=2, time_scale=6000, token=TOKEN)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    monkeypatch.delenv("RCE_PHASES_IN_TRIGGERER", raising=False)
    return server


def _kwargs(task_id: str, **kw: Any) -> dict[str, Any]:
    ids = {"task_id": task_id, "sddc_id": "sddc-0001", "target_version": TARGET, "rollout": R, "wave": W}
    return {**ids, "inline_wait_s": 20.0, "resume_delay_s": 0.0, "poll_min_s": 0.05, **kw}


def _up_to_hosts(fleet: Any, ledger: Ledger) -> dict[str, Any]:
    sddc: dict[str, Any] = fleet.sddc("sddc-0001")
    _enroll(ledger, R, W, "sddc-0001", RUN, TARGET, "1.25.0")
    for phase in (PrecheckOperator, SnapshotOperator, VcenterUpgradeOperator, NsxUpgradeOperator):
        phase(**_kwargs(phase.phase)).execute(CONTEXT)
    return sddc


def _deferral(op: Any) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(CONTEXT)
    return deferred.value


def test_the_hosts_phase_runs_every_host_in_the_triggerer_and_ends_the_task_there(
    fleet: Any, ledger: Ledger
) -> None:
    """One worker execution starts the first host's maintenance and defers; the trigger
    waits for it and takes every further step (upgrade, exit, the next hosts) itself, then
    ends the task with the phase's result: no resumption on a worker at all."""
    sddc = _up_to_hosts(fleet, ledger)
    fleet.reset_counters()
    op = HostsUpgradeOperator(**_kwargs("upgrade_hosts", inline_wait_s=0.0, retries=2))
    deferred = _deferral(op)
    trigger = deferred.trigger
    assert isinstance(trigger, PhaseTrigger) and deferred.method_name == "resume_from_triggerer"
    assert trigger.method == "execute_complete"
    assert (
        trigger.wait is not None
        and trigger.wait[0] == "rce_lib.triggers.downstream_task.DownstreamTaskTrigger"
    )
    assert trigger.context == {
        "run_id": RUN,
        "try_number": 1,
        "map_index": 3,
        "dag_id": "rce_wave_w",
        "task_id": "bulk.upgrade_hosts",
    }
    assert trigger.phase["kwargs"]["retries"] == 2

    event = asyncio.run(first_event(trigger, 60))

    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms is not None and "hosts" in str(event.xcoms["return_value"])
    after = fleet.sddc("sddc-0001")
    assert {h["version"] for h in after["hosts"]} != {h["version"] for h in sddc["hosts"]}
    assert all(h["state"] == "CONNECTED" for h in after["hosts"])
    created = fleet.counters()["tasks_created"]
    hosts = len(sddc["hosts"])
    assert created == {"HOST_MAINTENANCE": 2 * hosts, "UPGRADE_HOST": hosts}, created
    assert fleet.counters()["duplicate_starts"]["count"] == 0
    progress = ledger.get(R, W, "sddc-0001")
    assert progress is not None and progress.phase is Phase.UPGRADE_HOSTS
    assert progress.status is Status.SUCCEEDED, progress


def test_a_failure_in_the_triggerer_is_recorded_there_and_raised_on_the_worker(
    fleet: Any, ledger: Ledger
) -> None:
    """A host drops out while the first one is in maintenance: the phase, going on in the
    triggerer, stops before the next host (its failure in the ledger); the task goes back
    to a worker only to raise it, so Airflow's retries apply."""
    sddc = _up_to_hosts(fleet, ledger)
    last = sorted(sddc["hosts"], key=lambda h: (h["cluster_id"], h["id"]))[-1]["id"]
    op = HostsUpgradeOperator(**_kwargs("upgrade_hosts", inline_wait_s=0.0, retries=2))
    trigger = _deferral(op).trigger
    fleet.drift(kind="host_disconnected", sddc_id="sddc-0001", host_id=last)

    event = asyncio.run(first_event(trigger, 60))

    assert type(event) is TriggerEvent
    assert event.payload["status"] == "raised" and event.payload["kind"] == "retry", event.payload
    assert (
        event.payload["reason"] and "HOST_DISCONNECTED" in event.payload["message"] + event.payload["reason"]
    )
    failed = ledger.get(R, W, "sddc-0001")
    assert failed is not None and failed.status is Status.FAILED
    events_before = len(ledger.events(R, W, "sddc-0001"))
    with pytest.raises(PhaseError, match="HOST_DISCONNECTED"):
        HostsUpgradeOperator(**_kwargs("upgrade_hosts")).resume_from_triggerer(CONTEXT, event.payload)
    assert len(ledger.events(R, W, "sddc-0001")) == events_before  # recorded once, in the triggerer


def test_what_the_triggerer_cannot_carry_on_a_worker_takes_over_from_the_wait(
    fleet: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in the triggerer's step hands the wait's event to a worker, which
    runs the method it would have run: the phase ends there, nothing started twice."""
    _enroll(ledger, R, W, "sddc-0002", RUN, TARGET, "1.25.0")
    for phase in (PrecheckOperator, SnapshotOperator):
        phase(**_kwargs(phase.phase, sddc_id="sddc-0002")).execute(CONTEXT)
    fleet.reset_counters()
    op = VcenterUpgradeOperator(**_kwargs("upgrade_vcenter", sddc_id="sddc-0002", inline_wait_s=0.0))
    trigger = _deferral(op).trigger
    assert isinstance(trigger, PhaseTrigger)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the ledger went away")

    monkeypatch.setattr(PhaseTrigger, "_operator", broken)
    event = asyncio.run(first_event(trigger, 60))

    assert event.payload["status"] == "handoff" and event.payload["method"] == "execute_complete"
    assert event.payload["event"]["status"] == "terminal"
    resumed = VcenterUpgradeOperator(**_kwargs("upgrade_vcenter", sddc_id="sddc-0002"))
    result = resumed.resume_from_triggerer(CONTEXT, event.payload)
    assert "vcenter" in str(result).lower()
    assert fleet.counters()["tasks_created"].get("UPGRADE_VCENTER") == 1
    progress = ledger.get(R, W, "sddc-0002")
    assert progress is not None and progress.phase is Phase.UPGRADE_VCENTER
    assert progress.status is Status.SUCCEEDED


def test_the_trigger_round_trips_and_carries_no_secret(fleet: Any, ledger: Ledger) -> None:
    _up_to_hosts(fleet, ledger)
    trigger = _deferral(HostsUpgradeOperator(**_kwargs("upgrade_hosts", inline_wait_s=0.0))).trigger
    classpath, kwargs = trigger.serialize()
    assert classpath == "rce_lib.triggers.phase.PhaseTrigger"
    assert PhaseTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert TOKEN not in repr(kwargs)
    assert "doc_md" not in kwargs["phase"]["kwargs"]


def test_off_the_worker_resumes_after_every_wait(
    fleet: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _up_to_hosts(fleet, ledger)
    monkeypatch.setenv("RCE_PHASES_IN_TRIGGERER", "off")
    deferred = _deferral(HostsUpgradeOperator(**_kwargs("upgrade_hosts", inline_wait_s=0.0)))
    assert isinstance(deferred.trigger, DownstreamTaskTrigger)
    assert deferred.method_name == "execute_complete"


def test_bad_events_from_the_triggerer_fail_clearly() -> None:
    op = HostsUpgradeOperator(**_kwargs("upgrade_hosts"))
    assert op.resume_from_triggerer(CONTEXT, "success") is None  # `airflow dags test`
    with pytest.raises(Exception, match="unexpected event"):
        op.resume_from_triggerer(CONTEXT, {"status": "handoff", "method": "execute", "event": None})
    with pytest.raises(Exception, match="unexpected event"):
        op.resume_from_triggerer(CONTEXT, {"status": "what"})


@pytest.mark.parametrize(
    ("raw", "on"), [("", True), ("off", False), ("0", False), ("false", False), ("on", True), ("1", True)]
)
def test_the_switch(raw: str, on: bool) -> None:
    assert phase_module.enabled({"RCE_PHASES_IN_TRIGGERER": raw}) is on


def test_in_the_triggerer_a_phase_keeps_one_hook_for_all_its_steps(fleet: Any, ledger: Ledger) -> None:
    """One session and one connection lookup for every step a phase takes in the triggerer;
    on a worker every execution builds its own."""
    here = HostsUpgradeOperator(**_kwargs("upgrade_hosts"))
    here.in_triggerer()
    assert here.open_run(CONTEXT).hook is here.open_run(CONTEXT).hook
    other_run = {"run_id": "manual__other", "ti": Ti()}
    assert here.open_run(other_run).hook is not here.open_run(CONTEXT).hook  # another trace
    worker = HostsUpgradeOperator(**_kwargs("upgrade_hosts"))
    assert worker.open_run(CONTEXT).hook is not worker.open_run(CONTEXT).hook


def test_a_forked_child_gets_its_own_phase_threads(in_forked_child: Callable[..., int]) -> None:
    """The parent's pool has threads the child does not: a step submitted there would wait forever."""
    import multiprocessing

    from rce_lib.triggers import phase

    assert phase._threads().submit(lambda: 1).result(5) == 1
    out = multiprocessing.get_context("fork").Queue()
    assert in_forked_child(_step_in_child, out) == 0
    assert out.get(timeout=5) == 42


def _step_in_child(out: Any) -> None:
    from rce_lib.triggers import phase

    out.put(phase._threads().submit(lambda: 42).result(10))
