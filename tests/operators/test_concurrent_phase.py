"""Two executions of one phase at once, against the real simulator: Airflow re-runs a task
instance whose scheduler died (a new scheduler resets the dead one's RUNNING task instances,
which the LocalExecutor cannot adopt) while the orphaned worker still runs the first
execution. Found by the crash-resume soak (tests/integration/test_crash_resume_soak.py): the
second execution decided on an SDDC read while the first one's host exit still ran, found that
exit SUCCEEDED when it went to start it, and started a second exit under a new key (three
maintenance changes for one host, and the first execution then failed on the bumped key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from rce_lib.api.models import HostState
from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Phase
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.components import NsxUpgradeOperator, VcenterUpgradeOperator
from rce_lib.operators.hosts import HostsUpgradeOperator
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.operators.snapshot import SnapshotOperator
from rce_lib.triggers.downstream_task import DownstreamTaskTrigger
from tests.waiting import first_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120), pytest.mark.usefixtures("worker_resumes")]
R, W, RUN, TARGET, SDDC = "r", "w", "manual__2026-11-26", "1.26.0", "sddc-0001"


class Ti:
    try_number = 1


CONTEXT: dict[str, Any] = {"run_id": RUN, "ti": Ti()}


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    # a maintenance change takes 1.5 s: long enough to read the host in maintenance while
    # its exit runs, short enough for a quick test
    server = sim_factory(size=2, time_scale=6000, config={"durations_s": {"HOST_MAINTENANCE": 9000}})
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    _enroll(ledger, R, W, SDDC, RUN, TARGET, "1.25.0")
    for phase in (PrecheckOperator, SnapshotOperator, VcenterUpgradeOperator, NsxUpgradeOperator):
        phase(**_kwargs(phase.phase)).execute(CONTEXT)
    return server


def _kwargs(task_id: str, **kw: Any) -> dict[str, Any]:
    ids = {"task_id": task_id, "sddc_id": SDDC, "target_version": TARGET, "rollout": R, "wave": W}
    return {**ids, "inline_wait_s": 20.0, "resume_delay_s": 0.0, "poll_min_s": 0.05, **kw}


def _first_execution_until_its_first_host_exit(op: HostsUpgradeOperator) -> DownstreamTaskTrigger:
    """Execution A waits on every task (no inline wait); it is left waiting on its first exit."""
    call: Any = lambda: op.execute(CONTEXT)  # noqa: E731
    while True:
        try:
            call()
        except TaskDeferred as deferred:
            trigger = deferred.trigger
            assert isinstance(trigger, DownstreamTaskTrigger)
            if trigger.echo["op"] == "host_exit":
                return trigger
            event = asyncio.run(first_event(trigger, 30))
            call = lambda payload=event.payload: op.execute_complete(CONTEXT, payload)  # noqa: E731
        else:
            raise AssertionError("execution A ended without ever exiting a host")


def test_a_second_execution_does_not_redo_a_step_the_first_finished_after_its_read(
    fleet: Any, ledger: Ledger
) -> None:
    first = HostsUpgradeOperator(**_kwargs("upgrade_hosts", inline_wait_s=0.0))
    trigger = _first_execution_until_its_first_host_exit(first)
    host, exit_task = str(trigger.echo["host_id"]), str(trigger.echo["task_id"])

    # execution B begins meanwhile: it reads the SDDC (as its reconciliation does) while A's exit runs
    second = HostsUpgradeOperator(**_kwargs("upgrade_hosts"))
    run = second.open_run(CONTEXT)
    stale = run.hook.get_sddc(SDDC)
    assert next(h for h in stale.hosts if h.id == host).state is HostState.MAINTENANCE
    assert fleet.wait_task(exit_task)["status"] == "SUCCEEDED"  # ...and A's exit ends before B acts on it
    run.remember_sddc(stale)
    second.advance(run)

    # A wakes up and finishes too, on the keys B used: nothing is started again
    event = asyncio.run(first_event(trigger, 30))
    first.execute_complete(CONTEXT, event.payload)

    tasks = fleet.request("GET", f"/api/v1/sddcs/{SDDC}/tasks?limit=200").json()["items"]
    on_host = [t["id"] for t in tasks if t["host_id"] == host and t["type"] == "HOST_MAINTENANCE"]
    assert len(on_host) == 2, f"{host}: maintenance changes {on_host} (enter and exit expected)"
    hosts = fleet.sddc(SDDC)["hosts"]
    per_host = [t for t in tasks if t["type"] in ("HOST_MAINTENANCE", "UPGRADE_HOST")]
    assert len(per_host) == 3 * len(hosts), [(t["type"], t["host_id"]) for t in per_host]
    assert {h["state"] for h in hosts} == {"CONNECTED"}
    kinds = [e.kind for e in ledger.events(rollout=R, wave=W, sddc_id=SDDC, limit=1000)]
    assert "generation_bumped" not in kinds and "phase_failed" not in kinds, kinds
    op = ledger.get_operation(R, W, SDDC, Phase.UPGRADE_HOSTS, host_id=f"{host}/exit")
    assert op is not None and (op.task_id, op.generation, op.status) == (exit_task, 0, "SUCCEEDED")
    assert fleet.counters()["duplicate_starts"]["count"] == 0
