"""An API error anywhere in a phase's loop ends the phase with its reason in the ledger (or a
deferred wait when the API pushes back), never as a raw exception.

Found by the chaos wave's review: the poll of a task just started (`wait_inline`), the reads
of `next_step` (postcheck's health) and of `on_done` were outside the loop's error handling,
so a spent retry budget there failed the Airflow task with a bare `ApiError` and left the
ledger without a reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from _fakes import SDDC_ID, TARGET, FakeHook, FakeRun, phase_kwargs, progress, sddc
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import TaskDeferred

from rce_lib.api.models import Sddc, Task
from rce_lib.errors import ApiError, Reason, ThrottledError
from rce_lib.hooks.sddc_api import StartResult
from rce_lib.operators.base import PhaseError
from rce_lib.operators.components import VcenterUpgradeOperator
from rce_lib.operators.postcheck import PostcheckOperator

BUDGET_SPENT = ApiError(
    "GET /api/v1/tasks/{task_id}: HTTP 500 INTERNAL_ERROR (retry budget of reads spent after 5 attempts)",
    status=500,
    code="INTERNAL_ERROR",
    reason=Reason.RETRY_BUDGET_EXHAUSTED,
    retryable=True,
)
THROTTLED = ThrottledError(
    "GET /api/v1/sddcs/{sddc_id}/health: HTTP 429 RATE_LIMITED (retry budget of reads spent)",
    status=429,
    code="RATE_LIMITED",
    reason=Reason.RETRY_BUDGET_EXHAUSTED,
    retryable=True,
    retry_after=42.0,
)


def _running_task() -> Task:
    now = datetime.now(UTC)
    return Task.model_validate(
        {
            "id": "task-00000001",
            "sddc_id": SDDC_ID,
            "type": "UPGRADE_VCENTER",
            "status": "RUNNING",
            "created_at": now,
            "updated_at": now,
        }
    )


class ApiHook(FakeHook):
    """Reads the SDDC; starts answer a running task; polls and health reads raise `error`."""

    def __init__(self, current: Sddc, error: Exception) -> None:
        super().__init__()
        self.current = current
        self.error = error

    def get_sddc(self, sddc_id: str) -> Sddc:
        return self.current

    def get_task(self, task_id: str) -> Task:
        raise self.error

    def get_health(self, sddc_id: str) -> Any:
        raise self.error

    def start_component_upgrade(self, sddc_id: str, component: str, target: str, *, key: str) -> StartResult:
        self.calls.append(("start_component_upgrade", (sddc_id, component, target), {"key": key}))
        return StartResult(task=_running_task(), outcome="created")


class LoopRun(FakeRun):
    """FakeRun plus what the loop itself writes (operations)."""

    trace_id = "0" * 31 + "1"
    recorded: list[tuple[str, str]]

    def record_operation(
        self, op: str, host_id: str | None, generation: int, task: Task, key: Any, outcome: str
    ) -> None:
        self.recorded = [*getattr(self, "recorded", []), (op, outcome)]

    def take_sddc(self) -> Sddc | None:
        return None  # nothing remembered: the loop reads the SDDC

    def remember_sddc(self, sddc: Sddc | None) -> None:
        pass

    @property
    def has_release(self) -> bool:
        return True  # FakeRun.release is always at hand


def test_a_spent_budget_polling_a_started_task_fails_the_phase_with_its_reason() -> None:
    run = LoopRun(hook=ApiHook(sddc("1.25.0"), BUDGET_SPENT))  # type: ignore[arg-type]
    op = VcenterUpgradeOperator(
        task_id="upgrade_vcenter", inline_wait_s=5.0, poll_min_s=0.05, **phase_kwargs()
    )
    with pytest.raises(PhaseError, match=r"\[RETRY_BUDGET_EXHAUSTED\].*retry budget of reads spent"):
        op.advance(run)  # type: ignore[arg-type]
    assert run.recorded == [("vcenter", "created")]  # the next try re-attaches to this task
    assert run.failures == [
        {
            "phase": "upgrade_vcenter",
            "reason": "RETRY_BUDGET_EXHAUSTED",
            "code": "INTERNAL_ERROR",
            "retryable": True,
            "verdict": False,
        }
    ]


@pytest.mark.usefixtures("worker_resumes")
def test_a_throttled_read_in_next_step_defers_for_the_retry_after() -> None:
    run = LoopRun(  # type: ignore[arg-type]
        hook=ApiHook(sddc(TARGET), THROTTLED), ledger_progress=progress(snapshot_id="snap-1")
    )
    op = PostcheckOperator(task_id="postcheck", **phase_kwargs())
    with pytest.raises(TaskDeferred) as deferred:
        op.advance(run)  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, TimeDeltaTrigger)
    assert deferred.value.method_name == "resume_after_wait"
    assert [(kind, data) for kind, _, data in run.events] == [("phase_waiting", {"seconds": 42.0})]
    assert run.failures == []
