"""StartTrigger: every phase but the rollback starts in the triggerer (start_from_trigger) and
runs there, with the arguments a worker would have rendered; what it cannot do goes to a worker.

The triggerer gives a trigger started this way its task instance (a RuntimeTaskInstance:
XComs and the template context through the triggerer's supervisor); `_StartedTi` stands in for
it with the same three calls. Under a real triggerer it runs in
tests/integration/test_promotion_standalone.py (the phases are never queued).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.triggers.base import TaskSuccessEvent

from rce_lib.dag_factory import build_wave_dag
from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import Status
from rce_lib.operators.cohort import _enroll
from rce_lib.operators.precheck import PrecheckOperator
from rce_lib.pacing.store import Pacer
from rce_lib.plan.loader import default_plan_path, load_plan
from rce_lib.plan.model import RolloutPlan
from rce_lib.triggers.start import StartTrigger, slice_task_id
from tests.waiting import first_event

R, W, RUN, TARGET = "r", "w", "manual__2026-11-26", "1.26.0"
IDS = ["sddc-0001", "sddc-0002", "sddc-0003"]


class _StartedTi:
    """What the triggerer sets as `trigger.task_instance` for a task started from it."""

    def __init__(
        self,
        map_index: int,
        *,
        params: dict[str, Any] | None = None,
        slices: dict[str, Any] | None = None,
        task_id: str = "bulk.precheck",
    ) -> None:
        self.dag_id, self.task_id, self.run_id = "rce_wave_w", task_id, RUN
        self.map_index, self.try_number = map_index, 1
        self.params = {"max_parallel": None, "target_version": TARGET, **(params or {})}
        self.xcoms: dict[str, Any] = {
            "bulk_slice": IDS,
            "resolve_cohort": [*IDS, "sddc-0009"],
            **(slices or {}),
        }
        self.pulls: list[tuple[str, int]] = []

    async def axcom_pull(self, *, task_ids: str, map_indexes: int) -> Any:
        self.pulls.append((task_ids, map_indexes))
        return self.xcoms.get(task_ids)

    def get_template_context(self) -> dict[str, Any]:
        return {"params": self.params}


PRECHECK = "rce_lib.operators.precheck.PrecheckOperator"
POSTCHECK = "rce_lib.operators.postcheck.PostcheckOperator"


def _precheck_trigger(**static: Any) -> StartTrigger:
    return StartTrigger(
        operator=PRECHECK,
        static={
            "rollout": R,
            "wave": W,
            "target_version": "9.9.9",
            "retries": 2,
            "max_parallel": 2,
            "admission_poll_s": 0.05,
            **static,
        },
        from_params={"target_version": "target_version", "max_parallel": "max_parallel"},
        xcom_lengths={"cohort_size": "resolve_cohort"},
        ceiling_of="vcenter",
    )


def _trigger(ti: _StartedTi, **static: Any) -> StartTrigger:
    trigger = _precheck_trigger(**static)
    trigger.task_instance = ti  # type: ignore[assignment]
    return trigger


def _run(trigger: StartTrigger, timeout: float = 20.0) -> Any:
    return asyncio.run(first_event(trigger, timeout))


def _worker_precheck(sddc_id: str = "sddc-0001") -> PrecheckOperator:
    return PrecheckOperator(
        task_id="bulk.precheck", sddc_id=sddc_id, rollout=R, wave=W, target_version=TARGET, max_parallel=2
    )


class _Ti:
    try_number = 1


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> Any:
    server = sim_factory(size=2, time_scale=6000, token="start-secret-token")
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    for sddc_id in IDS[:2]:
        _enroll(ledger, R, W, sddc_id, RUN, TARGET, server.sddc(sddc_id)["version"])
    return server


@pytest.fixture
def vcenter_ceiling(ledger: Ledger) -> Pacer:
    """The vCenter pool's size copied into the ledger, as the scheduler's listener does."""
    pacer = Pacer(ledger)
    pacer.set_ceilings({"vcenter": 60}, "test")
    return pacer


@pytest.mark.integration
def test_admits_the_map_indexs_sddc_and_prechecks_it_here(
    fleet: Any, ledger: Ledger, vcenter_ceiling: Pacer
) -> None:
    """The SDDC from the slice at the map index, the run's target_version param (not the plan's
    9.9.9), the cohort's size from resolve_cohort: admitted, prechecked, the task ended here."""
    ti = _StartedTi(1)
    fleet.reset_counters()
    event = _run(_trigger(ti))
    assert isinstance(event, TaskSuccessEvent), event
    assert ti.pulls == [("bulk_slice", -1), ("resolve_cohort", -1)]
    assert fleet.counters()["mutating_calls"] == 1  # the precheck, for sddc-0002
    progress = ledger.get(R, W, "sddc-0002")
    assert progress is not None and progress.run_id == RUN and progress.target_version == TARGET
    assert ledger.in_flight(R, W, RUN) == 1
    assert [s.in_flight for s in vcenter_ceiling.states()] == [0]  # the precheck's slot given back


@pytest.mark.integration
def test_the_runs_max_parallel_param_lowers_the_plans_and_the_wait_is_here(
    fleet: Any, ledger: Ledger, vcenter_ceiling: Pacer
) -> None:
    """max_parallel 1 from the trigger form: the second SDDC waits for a slot in this
    trigger, starts nothing, and is admitted once the first SDDC's slot is released."""
    assert isinstance(_run(_trigger(_StartedTi(0, params={"max_parallel": 1}))), TaskSuccessEvent)
    fleet.reset_counters()

    async def second_admitted_after_release() -> Any:
        waiting = asyncio.ensure_future(first_event(_trigger(_StartedTi(1, params={"max_parallel": 1})), 20))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # waiting for the slot, not admitted
        assert fleet.counters()["mutating_calls"] == 0
        ledger.upsert_progress(R, W, "sddc-0001", RUN, status=Status.SUCCEEDED, finished_at=datetime.now(UTC))
        return await waiting

    event = asyncio.run(second_admitted_after_release())
    assert isinstance(event, TaskSuccessEvent), event
    assert fleet.counters()["mutating_calls"] == 1


@pytest.mark.integration
def test_the_kill_switch_fails_on_a_worker_with_its_reason(
    fleet: Any, ledger: Ledger, vcenter_ceiling: Pacer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_RCE_KILL_SWITCH_W", "INC-7 stop")
    fleet.reset_counters()
    event = _run(_trigger(_StartedTi(0)))
    assert event.payload["status"] == "raised" and event.payload["kind"] == "fail"
    assert event.payload["reason"] == "KILL_SWITCH"
    with pytest.raises(AirflowFailException, match=r"^\[KILL_SWITCH\] sddc-0001 not started"):
        _worker_precheck().resume_from_triggerer({"run_id": RUN}, event=event.payload)  # type: ignore[arg-type]
    assert ledger.in_flight(R, W, RUN) == 0
    assert fleet.counters()["requests_total"] == 1  # this counters read only


def test_a_spent_error_budget_is_a_skip_on_the_worker() -> None:
    raised = {
        "status": "raised",
        "kind": "skip",
        "reason": "ERROR_BUDGET_EXHAUSTED",
        "message": "3 of 4 failed",
    }
    with pytest.raises(AirflowSkipException, match=r"\[ERROR_BUDGET_EXHAUSTED\] 3 of 4 failed"):
        _worker_precheck().resume_from_triggerer({"run_id": RUN}, event=raised)  # type: ignore[arg-type]


@pytest.mark.integration
def test_a_slice_without_the_map_index_goes_to_a_worker_which_runs_it_as_before(
    fleet: Any, ledger: Ledger, vcenter_ceiling: Pacer
) -> None:
    event = _run(_trigger(_StartedTi(7)))
    assert event.payload == {"status": "handoff", "method": "run_from_start", "event": None}
    assert ledger.in_flight(R, W, RUN) == 0
    _worker_precheck().resume_from_triggerer({"run_id": RUN, "ti": _Ti()}, event=event.payload)  # type: ignore[arg-type]
    assert ledger.in_flight(R, W, RUN) == 1


def test_no_task_instance_goes_to_a_worker() -> None:
    event = _run(_precheck_trigger())
    assert event.payload["status"] == "handoff"


def test_an_unexpected_event_fails_loudly() -> None:
    with pytest.raises(AirflowFailException, match="unexpected event"):
        _worker_precheck().resume_from_triggerer(
            {"run_id": RUN},  # type: ignore[arg-type]
            event={"status": "handoff", "method": "delete_everything"},
        )


def test_serializes_to_the_plan_arguments_only() -> None:
    trigger = StartTrigger(
        operator=PRECHECK, static={"rollout": R}, from_params={"max_parallel": "max_parallel"}
    )
    assert trigger.serialize() == (
        "rce_lib.triggers.start.StartTrigger",
        {
            "operator": PRECHECK,
            "static": {"rollout": R},
            "from_params": {"max_parallel": "max_parallel"},
            "xcom_lengths": {},
            "ceiling_of": None,
        },
    )


def _plan() -> RolloutPlan:
    return load_plan(default_plan_path())  # the shipped plan


def test_the_wave_dags_phases_start_in_the_triggerer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RCE_PHASES_IN_TRIGGERER", raising=False)
    plan = _plan()
    wave = plan.effective_waves()[0]
    dag = build_wave_dag(plan, wave)
    for group in ("canary", "bulk"):
        precheck = dag.get_task(f"{group}.precheck")
        assert precheck.start_from_trigger is True
        args = precheck.start_trigger_args
        assert args is not None and args.trigger_cls == "rce_lib.triggers.start.StartTrigger"
        assert args.next_method == "resume_from_triggerer"
        kwargs = args.trigger_kwargs
        assert kwargs["operator"] == PRECHECK
        assert kwargs["from_params"] == {"target_version": "target_version", "max_parallel": "max_parallel"}
        assert kwargs["xcom_lengths"] == {"cohort_size": "resolve_cohort"}
        assert kwargs["ceiling_of"] == "vcenter"
        static = kwargs["static"]
        assert static["max_parallel"] == wave.max_parallel and static["target_version"] == wave.release
        assert static["max_fail_percentage"] == wave.max_fail_percentage
        assert static["respect_maintenance_windows"] == wave.respect_maintenance_windows
        assert static["expected_phase_seconds"] == dict(wave.expected_phase_seconds)
        assert "cohort_size" not in static and "sddc_id" not in static
        assert dag.has_task(slice_task_id(group))  # where the trigger reads the group's SDDC ids
        postcheck = dag.get_task(f"{group}.postcheck")
        assert postcheck.start_from_trigger is True
        pargs = postcheck.start_trigger_args
        assert pargs is not None and pargs.trigger_kwargs["operator"] == POSTCHECK
        assert pargs.trigger_kwargs["from_params"] == {"target_version": "target_version"}
        assert pargs.trigger_kwargs["static"]["retries"] == postcheck.retries
        assert pargs.trigger_kwargs["static"]["max_error_rate"] == wave.gate.max_error_rate
        assert pargs.trigger_kwargs["ceiling_of"] is None  # reads only: no slot, no ceiling
        for phase, service in SERVICE_PHASES.items():
            task = dag.get_task(f"{group}.{phase}")
            kwargs = task.start_trigger_args.trigger_kwargs
            assert task.start_from_trigger is True
            assert kwargs["ceiling_of"] == service  # starts only under the service's ceiling
            assert kwargs["static"]["target_version"] == wave.release
            assert kwargs["from_params"] == {"target_version": "target_version"}
            assert "sddc_id" not in kwargs["static"]  # rendered from the slice at the map index
            assert all("{{" not in str(v) for v in kwargs["static"].values())
        nsx = dag.get_task(f"{group}.upgrade_nsx").start_trigger_args.trigger_kwargs
        assert nsx["static"]["respect_maintenance_windows"] == wave.respect_maintenance_windows
    assert not dag.get_task("bulk.rollback").start_from_trigger  # starts after a failure, on a worker


SERVICE_PHASES = {
    "snapshot": "vcenter",
    "upgrade_vcenter": "vcenter",
    "upgrade_nsx": "nsx",
    "upgrade_hosts": "esx",
}


def test_with_phases_in_triggerer_off_every_phase_starts_on_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCE_PHASES_IN_TRIGGERER", "off")
    plan = _plan()
    dag = build_wave_dag(plan, plan.effective_waves()[0])
    for task_id in ("precheck", *SERVICE_PHASES, "postcheck"):
        assert dag.get_task(f"bulk.{task_id}").start_from_trigger is False


def _postcheck_trigger(ti: _StartedTi, **static: Any) -> StartTrigger:
    trigger = StartTrigger(
        operator=POSTCHECK,
        static={"rollout": R, "wave": W, "target_version": "9.9.9", "retries": 2, **static},
        from_params={"target_version": "target_version"},
    )
    trigger.task_instance = ti  # type: ignore[assignment]
    return trigger


@pytest.mark.integration
def test_a_postcheck_started_here_reads_the_sddc_and_ends_the_task(fleet: Any, ledger: Ledger) -> None:
    """The run's target_version param (not the plan's 9.9.9) is what the SDDC is checked against."""
    version = fleet.sddc("sddc-0002")["version"]
    _enroll(ledger, R, W, "sddc-0002", RUN, version, version)
    fleet.reset_counters()
    ti = _StartedTi(1, params={"target_version": version}, task_id="bulk.postcheck")
    event = _run(_postcheck_trigger(ti))
    assert isinstance(event, TaskSuccessEvent), event
    assert event.xcoms == {"return_value": f"sddc-0002 at {version}, READY and healthy"}
    assert fleet.counters()["mutating_calls"] == 0  # a postcheck only reads


@pytest.mark.integration
def test_an_unhealthy_postcheck_rechecks_here_then_fails_on_a_worker(fleet: Any, ledger: Ledger) -> None:
    version = fleet.sddc("sddc-0001")["version"]
    _enroll(ledger, R, W, "sddc-0001", RUN, "1.26.0", version)
    trigger = _postcheck_trigger(
        _StartedTi(0, params={"target_version": "1.26.0"}, task_id="bulk.postcheck"), health_interval_s=0.05
    )
    event = _run(trigger)
    assert event.payload["status"] == "raised" and event.payload["kind"] in ("fail", "retry"), event.payload
    assert event.payload["reason"] == "POSTCHECK_UNHEALTHY"
    checks = ledger.events(rollout=R, wave=W, kinds=["postcheck_unhealthy"])
    assert len(checks) == 3  # health_checks: re-checked twice in the trigger before failing


SNAPSHOT = "rce_lib.operators.snapshot.SnapshotOperator"


def _snapshot_trigger(ti: _StartedTi) -> StartTrigger:
    trigger = StartTrigger(
        operator=SNAPSHOT,
        static={"rollout": R, "wave": W, "target_version": "9.9.9", "retries": 2},
        from_params={"target_version": "target_version"},
        ceiling_of="vcenter",
    )
    trigger.task_instance = ti  # type: ignore[assignment]
    return trigger


def _snapshot_ti(fleet: Any, ledger: Ledger, index: int) -> _StartedTi:
    sddc_id = IDS[index]
    version = fleet.sddc(sddc_id)["version"]
    _enroll(ledger, R, W, sddc_id, RUN, "1.26.0", version)
    return _StartedTi(index, params={"target_version": "1.26.0"}, task_id="bulk.snapshot")


@pytest.mark.integration
def test_a_phase_that_starts_work_goes_to_a_worker_while_its_service_has_no_ceiling(
    fleet: Any, ledger: Ledger
) -> None:
    """No pool size copied into the ledger: nothing here would bound the service, so a worker
    runs the phase, under its pool."""
    ti = _snapshot_ti(fleet, ledger, 0)
    fleet.reset_counters()
    event = _run(_snapshot_trigger(ti))
    assert event.payload == {"status": "handoff", "method": "run_from_start", "event": None}
    assert fleet.counters()["mutating_calls"] == 0


@pytest.mark.integration
def test_a_phase_waits_here_for_a_slot_under_the_ceiling_and_starts_when_one_frees(
    fleet: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ceiling 1 and the one slot held: the snapshot waits in this trigger, starts no task,
    then takes the freed slot, snapshots the SDDC and ends the task here, slot given back."""
    monkeypatch.setenv("RCE_PACING", '{"wait_poll_s": 0.05}')
    pacer = Pacer(ledger)
    pacer.set_ceilings({"vcenter": 1}, "test")
    assert pacer.acquire("vcenter", "someone-else", "other-run").granted
    ti = _snapshot_ti(fleet, ledger, 0)
    fleet.reset_counters()

    async def started_after_release() -> Any:
        waiting = asyncio.ensure_future(first_event(_snapshot_trigger(ti), 30))
        await asyncio.sleep(1.0)
        assert not waiting.done()
        assert fleet.counters()["mutating_calls"] == 0  # no slot: nothing started
        pacer.release("someone-else")
        return await waiting

    event = asyncio.run(started_after_release())
    assert isinstance(event, TaskSuccessEvent), event
    assert fleet.counters()["mutating_calls"] == 1
    progress = ledger.get(R, W, IDS[0])
    assert progress is not None and progress.snapshot_id
    assert [s.in_flight for s in pacer.states()] == [0]
