"""Adaptive concurrency in a real phase against the real simulator: a phase whose service has
been refusing our starts waits in the triggerer without calling it, and the refusals a phase
meets close the service's shared limit (rce_lib.pacing)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import TaskDeferred

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.components import VcenterUpgradeOperator
from rce_lib.pacing.store import Pacer
from rce_lib.triggers.service_slot import ServiceSlotTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
R, W, RUN, TARGET = "r", "w", "manual__pacing", "1.26.0"
STARTS = ("POST", "/api/v1/sddcs/{sddc_id}/components/{component}/upgrade")


class Ti:
    try_number = 1


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    server = sim_factory(size=4, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    _enroll(ledger, R, W, "sddc-0001", RUN, TARGET, "1.25.0")
    return server


def _vcenter() -> VcenterUpgradeOperator:
    return VcenterUpgradeOperator(
        task_id="upgrade_vcenter",
        sddc_id="sddc-0001",
        target_version=TARGET,
        rollout=R,
        wave=W,
        inline_wait_s=20.0,
        resume_delay_s=0.0,
        poll_min_s=0.05,
    )


def _starts(fleet: Any) -> int:
    return sum(int(r["count"]) for r in fleet.counters()["requests"] if (r["method"], r["route"]) == STARTS)


@pytest.mark.usefixtures("worker_resumes")
def test_a_phase_waits_for_room_under_a_closed_limit_then_goes_on(fleet: Any, ledger: Ledger) -> None:
    pacer = Pacer(ledger)
    for holder in ("other-1", "other-2"):
        pacer.acquire("vcenter", holder, "another-run")
    for _ in range(3):
        pacer.refused("vcenter")  # limit 1, two of another run's tasks in flight
    fleet.reset_counters()
    op = _vcenter()
    context = {"run_id": RUN, "ti": Ti()}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, ServiceSlotTrigger) and trigger.service == "vcenter"
    assert deferred.value.method_name == "resume_after_wait"
    assert _starts(fleet) == 0, "started work on a service at its limit"
    [waiting] = [e for e in ledger.events(kinds=["phase_waiting"])]
    assert "vcenter has refused our starts lately" in waiting.message

    pacer.release("other-1")
    pacer.release("other-2")
    event = asyncio.run(asyncio.wait_for(trigger.run().__anext__(), timeout=10))
    assert event.payload["status"] == "room"
    op.resume_after_wait(context, event.payload)
    assert _starts(fleet) == 1
    target = fleet.request("GET", f"/api/v1/releases/{TARGET}").json()["components"]["vcenter"]
    assert fleet.sddc("sddc-0001")["components"]["vcenter"] == target
    assert [s.in_flight for s in pacer.states()] == [0], "the finished task kept its slot"


@pytest.mark.usefixtures("worker_resumes")
def test_sustained_refusals_close_the_limit_and_the_phase_gives_its_slot_back(
    fleet: Any, ledger: Ledger
) -> None:
    fleet.faults(capacity={"vcenter": 0})  # every start: 503 SERVICE_AT_CAPACITY, Retry-After 1 s
    fleet.reset_counters()
    with pytest.raises(TaskDeferred) as deferred:
        _vcenter().execute({"run_id": RUN, "ti": Ti()})
    assert isinstance(deferred.value.trigger, TimeDeltaTrigger)
    refused = _starts(fleet)
    assert refused >= 3 and fleet.counters()["capacity_503"] == {"vcenter": refused}
    [vcenter] = Pacer(ledger).states()
    assert vcenter.limit == 1.0 and vcenter.in_flight == 0
    assert fleet.counters()["retry_after_violations"]["count"] == 0


def _sddc_reads(fleet: Any) -> int:
    route = ("GET", "/api/v1/sddcs/{sddc_id}")
    return sum(int(r["count"]) for r in fleet.counters()["requests"] if (r["method"], r["route"]) == route)


@pytest.mark.usefixtures("worker_resumes")
def test_at_its_services_ceiling_a_phase_waits_then_starts_on_the_sddc_it_had_read(
    fleet: Any, ledger: Ledger
) -> None:
    """The pool's size in the ledger, all of it held by another run: the phase waits without
    starting anything; once a slot is given back the same phase object (as in the triggerer)
    decides again on the SDDC it read before the wait and starts, with no second read."""
    pacer = Pacer(ledger)
    pacer.set_ceilings({"vcenter": 1}, "test")
    pacer.acquire("vcenter", "other-1", "another-run")
    fleet.reset_counters()
    op = _vcenter()
    context = {"run_id": RUN, "ti": Ti()}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert _starts(fleet) == 0, "started work on a service at its ceiling"
    [waiting] = ledger.events(kinds=["phase_waiting"])
    assert "our ceiling on vcenter (its pool's size) is 1 in flight (1 now)" in waiting.message
    reads = _sddc_reads(fleet)

    pacer.release("other-1")
    event = asyncio.run(asyncio.wait_for(deferred.value.trigger.run().__anext__(), timeout=10))
    op.resume_after_wait(context, event.payload)
    assert _starts(fleet) == 1
    target = fleet.request("GET", f"/api/v1/releases/{TARGET}").json()["components"]["vcenter"]
    assert fleet.sddc("sddc-0001")["components"]["vcenter"] == target
    # after the wait: no read of the SDDC before the start (only the postcondition's, at the end)
    assert _sddc_reads(fleet) - reads <= 1


@pytest.mark.usefixtures("worker_resumes")
def test_a_phase_leaves_a_free_slot_to_a_later_phase_waiting_here_and_wakes_it(
    fleet: Any, ledger: Ledger
) -> None:
    """A rollback waits in this process for a vCenter slot: the vCenter upgrade, though there is
    room, starts nothing, waits behind it and wakes it at once (not at its next poll)."""
    from concurrent.futures import ThreadPoolExecutor

    from rce_lib.pacing import wakeup

    with ThreadPoolExecutor(1) as pool:
        waits = wakeup.given_back_or_timeout("vcenter", 30.0, rank=wakeup.rank(6))
        rollback = pool.submit(asyncio.run, waits)
        deadline = time.monotonic() + 5
        while not wakeup.outranked("vcenter", wakeup.rank(2, 99)) and time.monotonic() < deadline:
            time.sleep(0.01)
        fleet.reset_counters()
        with pytest.raises(TaskDeferred) as deferred:
            _vcenter().execute({"run_id": RUN, "ti": Ti()})
        assert rollback.result(timeout=5) is True  # woken by the phase that left it the slot
    hosts = len(fleet.sddc("sddc-0001")["hosts"])  # all below the target: all left
    assert isinstance(deferred.value.trigger, ServiceSlotTrigger)
    assert deferred.value.trigger.rank == wakeup.rank(2, hosts)
    assert _starts(fleet) == 0
    [waiting] = ledger.events(kinds=["phase_waiting"])
    assert "a later phase of another SDDC waits for a slot on vcenter" in waiting.message
    assert sum(s.in_flight for s in Pacer(ledger).states()) == 0  # no slot taken


@pytest.mark.usefixtures("worker_resumes")
def test_a_phase_that_finds_its_goal_done_gives_back_a_slot_its_cut_off_execution_held(
    fleet: Any, ledger: Ledger
) -> None:
    """An execution killed while its task ran (the slot still held), the task ended meanwhile:
    the next execution finds the goal true and never settles that task, so it gives back every
    slot of the SDDC. Held for good, such slots would fill the service's ceiling (seen in the
    crash soak: the 8 NSX slots held, the wave stuck). Another SDDC's slot is kept."""
    from rce_lib.operators.snapshot import SnapshotOperator

    context = {"run_id": RUN, "ti": Ti()}
    snapshot = SnapshotOperator(
        task_id="snapshot", sddc_id="sddc-0001", target_version=TARGET, rollout=R, wave=W, poll_min_s=0.05
    )
    snapshot.execute(context)  # the restore point the vCenter phase's reconciliation asks for
    _vcenter().execute(context)  # upgrades vCenter (inline wait)
    pacer = Pacer(ledger)
    pacer.set_ceilings({"vcenter": 2}, "test")
    assert pacer.acquire("vcenter", f"{R}/{W}/sddc-0001/vcenter/-", RUN).granted  # the cut-off one
    assert pacer.acquire("vcenter", f"{R}/{W}/sddc-0002/vcenter/-", RUN).granted
    assert not pacer.has_room("vcenter")
    _vcenter().execute(context)  # the goal holds
    assert [(s.service, s.in_flight) for s in pacer.states()] == [("vcenter", 1)]
    assert not pacer.release(f"{R}/{W}/sddc-0001/vcenter/-") and pacer.release(f"{R}/{W}/sddc-0002/vcenter/-")
